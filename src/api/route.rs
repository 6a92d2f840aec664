//! `EmailRoute`: an ordered list of providers a message can name instead of
//! one provider, so mail goes out through the next when one is down
//! (`Failover`), or is spread over several by weight (`Weighted`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::message::{ProviderKind, ProviderRef};

/// The most providers one route may list.
pub const MAX_ROUTE_PROVIDERS: usize = 10;

/// Providers to send through, in order: a message names the route in
/// `spec.providerRef` (`kind: EmailRoute`) and goes out through the first
/// provider that can take it. A provider is passed over while it is not
/// Ready, while its circuit breaker is open, or for a message whose attempt
/// through it failed in a way that certainly did not deliver (see
/// docs/delivery.md); never after an attempt that may have reached the
/// server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailRoute",
    namespaced,
    shortname = "eroute",
    category = "mailroom",
    doc = "An ordered list of providers with a strategy (Failover or Weighted) that messages name instead of one provider.",
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Providers","type":"string","jsonPath":".spec.providers[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.strategy == 'Weighted' || self.providers.all(p, !has(p.weight))").message("weight is for the Weighted strategy: under Failover the order decides"))]
#[serde(rename_all = "camelCase")]
pub struct EmailRouteSpec {
    /// `Failover` (default): every message goes through the first provider
    /// that can take it, the others in order when it cannot. `Weighted`:
    /// messages are spread over the providers that can take them in
    /// proportion to `weight`; a message whose provider cannot take it
    /// goes through the next in order.
    #[serde(default)]
    pub strategy: Strategy,
    /// The providers, in order (1 to 10, each once): EmailProviders of the
    /// route's namespace or ClusterEmailProviders that allow it. Routes do
    /// not name routes.
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name && (has(q.kind) ? q.kind : 'EmailProvider') == (has(p.kind) ? p.kind : 'EmailProvider')))").message("each provider may be listed once"))]
    pub providers: Vec<RouteProvider>,
}

/// How a route picks a provider.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// The first provider that can take the message, then the next.
    #[default]
    Failover,
    /// Spread by weight over the providers that can take the message.
    Weighted,
}

/// One provider of a route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.kind) || self.kind != 'EmailRoute'").message("a route names providers (EmailProvider or ClusterEmailProvider), not other routes: routes do not nest"))]
pub struct RouteProvider {
    /// `EmailProvider` (default), in the route's namespace, or
    /// `ClusterEmailProvider`, if it allows this namespace.
    #[serde(default, skip_serializing_if = "ProviderKind::is_default")]
    pub kind: ProviderKind,
    /// Name of the provider.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Under `Weighted`: this provider's share, against the sum of the
    /// weights of the providers that can take a message (1 to 1000;
    /// 1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: Option<u32>,
}

impl RouteProvider {
    /// The provider as a message's reference would name it.
    pub fn reference(&self) -> ProviderRef {
        ProviderRef {
            kind: self.kind,
            name: self.name.clone(),
        }
    }

    /// The weight, 1 when unset.
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1).max(1)
    }
}
