//! `DomainVerified` and `status.domain` on an API provider: the sending
//! domain (Mailgun's configured domain, else `defaultFrom`'s, or the
//! nearest parent the service knows) as the service sees it, read through
//! `manage::domains` when the spec changed or an hour passed. An unverified
//! domain is a warning unless the provider sets `requireVerifiedDomain`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;

use super::context::Context;
use super::credentials;
use crate::api::EmailProvider;
use crate::api::condition::{self, DOMAIN_VERIFIED, Reason};
use crate::api::provider::{ApiProvider, ApiSpec, DomainRecord, SendingDomain};
use crate::manage::client::{Client, ManageError};
use crate::manage::domains::{self, Checked};

/// How often the domain is read again when nothing changed.
pub const RECHECK: Duration = Duration::from_secs(3600);
/// Records named in the condition's message at most.
const NAMED: usize = 3;

/// What `DomainVerified` says, and `status.domain`.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainState {
    /// The condition status: True, False or Unknown.
    pub status: Option<bool>,
    /// Its reason.
    pub reason: Reason,
    /// Its message.
    pub message: String,
    /// `status.domain`.
    pub domain: Option<SendingDomain>,
    /// Whether the service was asked now (the status must be written).
    pub fresh: bool,
}

impl DomainState {
    /// Whether the provider may send under `requireVerifiedDomain`.
    pub fn verified(&self) -> bool {
        self.status == Some(true)
    }

    fn unknown(message: String, domain: Option<SendingDomain>) -> Self {
        Self {
            status: None,
            reason: Reason::DomainNotChecked,
            message,
            domain,
            fresh: true,
        }
    }
}

/// The domain a provider sends from.
fn sending_domain(provider: &EmailProvider, api: &ApiSpec) -> Option<String> {
    if api.provider == ApiProvider::Mailgun {
        return api.mailgun.as_ref().map(|m| m.domain.to_ascii_lowercase());
    }
    let from = provider.spec.default_from.as_deref()?;
    let address = from
        .rsplit_once('<')
        .map_or(from, |(_, rest)| rest.trim_end_matches('>'));
    let domain = address.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// The domain and its parents, nearest first (a service may verify
/// `example.com` for mail from `news.example.com`); Mailgun's domain only.
fn candidates(domain: &str, service: ApiProvider) -> Vec<String> {
    if service == ApiProvider::Mailgun {
        return vec![domain.to_string()];
    }
    let labels: Vec<&str> = domain.split('.').collect();
    (0..labels.len().saturating_sub(1))
        .map(|i| labels[i..].join("."))
        .collect()
}

/// The domain state to write, or `None` for an SMTP provider; the state in
/// status when it is recent and the spec unchanged.
pub async fn check(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Option<DomainState> {
    let api = provider.spec.api.as_ref()?;
    let status = provider.status.as_ref();
    let previous = status.and_then(|s| s.domain.clone());
    let unchanged = status.and_then(|s| s.observed_generation) == provider.metadata.generation;
    let kept = status.and_then(|s| condition::find(&s.conditions, DOMAIN_VERIFIED));
    if let (Some(kept), Some(domain), true) = (kept, &previous, unchanged) {
        let age = jiff::Timestamp::now().duration_since(domain.checked_at.0);
        if Duration::try_from(age).is_ok_and(|age| age < RECHECK) {
            return Some(DomainState {
                status: match kept.status.as_str() {
                    "True" => Some(true),
                    "False" => Some(false),
                    _ => None,
                },
                reason: reason_of(&kept.reason),
                message: kept.message.clone(),
                domain: previous,
                fresh: false,
            });
        }
    }
    let Some(domain) = sending_domain(provider, api) else {
        return Some(DomainState::unknown(
            "no sending domain to check: set spec.defaultFrom".into(),
            None,
        ));
    };
    let client = match client_of(ctx, provider, api, secrets_namespace).await {
        Ok(client) => client,
        Err(message) => return Some(DomainState::unknown(message, previous)),
    };
    let service = api.provider.name();
    for candidate in candidates(&domain, api.provider) {
        match domains::check(&client, &candidate).await {
            Ok(Some(checked)) => return Some(state_of(service, checked)),
            Ok(None) => continue,
            Err(e @ ManageError::Denied { .. }) => {
                let message = format!(
                    "{e}: give the provider a key that may read domains to check it (see docs/providers.md); sending is not affected"
                );
                return Some(DomainState::unknown(message, previous));
            }
            Err(e) => return Some(DomainState::unknown(e.to_string(), previous)),
        }
    }
    Some(DomainState {
        status: Some(false),
        reason: Reason::DomainNotFound,
        message: format!(
            "{service} does not know {domain} (nor a parent of it): add it there and publish the records it gives"
        ),
        domain: Some(SendingDomain {
            name: domain,
            verified: false,
            state: "not found".into(),
            checked_at: Time(jiff::Timestamp::now()),
            records: Vec::new(),
        }),
        fresh: true,
    })
}

fn reason_of(text: &str) -> Reason {
    match text {
        "DomainVerified" => Reason::DomainVerified,
        "DomainNotVerified" => Reason::DomainNotVerified,
        "DomainNotFound" => Reason::DomainNotFound,
        _ => Reason::DomainNotChecked,
    }
}

/// The state a service's answer gives.
fn state_of(service: &str, checked: Checked) -> DomainState {
    let records: Vec<DomainRecord> = checked
        .records
        .iter()
        .map(|r| DomainRecord {
            purpose: r.purpose.clone(),
            type_: r.kind.clone(),
            name: r.name.clone(),
            value: r.value.clone(),
            found: r.found,
        })
        .collect();
    let domain = SendingDomain {
        name: checked.name.clone(),
        verified: checked.verified,
        state: checked.state.clone(),
        checked_at: Time(jiff::Timestamp::now()),
        records,
    };
    if checked.verified {
        return DomainState {
            status: Some(true),
            reason: Reason::DomainVerified,
            message: format!("{service} counts {} verified", checked.name),
            domain: Some(domain),
            fresh: true,
        };
    }
    let missing: Vec<String> = checked
        .records
        .iter()
        .filter(|r| r.found == Some(false))
        .take(NAMED)
        .map(|r| format!("{} {} {}", r.purpose, r.kind, r.name))
        .collect();
    let more = checked
        .records
        .iter()
        .filter(|r| r.found == Some(false))
        .count()
        .saturating_sub(NAMED);
    let listed = match (missing.is_empty(), more) {
        (true, _) => String::new(),
        (false, 0) => format!(": not found yet: {}", missing.join(", ")),
        (false, more) => format!(": not found yet: {} and {more} more", missing.join(", ")),
    };
    DomainState {
        status: Some(false),
        reason: Reason::DomainNotVerified,
        message: format!(
            "{service} does not count {} verified ({}){listed}; status.domain.records lists what to publish",
            checked.name, checked.state
        ),
        domain: Some(domain),
        fresh: true,
    }
}

/// The management client for reading domains: the API key, or for
/// Postmark the account token.
async fn client_of(
    ctx: &Context,
    provider: &EmailProvider,
    api: &ApiSpec,
    secrets_namespace: &str,
) -> Result<Client, String> {
    if api.provider != ApiProvider::Postmark {
        return super::registration::client_of(ctx, provider, secrets_namespace).await;
    }
    let Some(reference) = api
        .postmark
        .as_ref()
        .and_then(|p| p.account_token_secret_ref.as_ref())
    else {
        return Err("Postmark's domains API takes the account token, not the server token: set spec.api.postmark.accountTokenSecretRef to check the domain".into());
    };
    if let Some(endpoint) = &api.endpoint {
        credentials::check_endpoint(endpoint, &ctx.settings.allowed_endpoint_hosts)
            .map_err(|e| e.message)?;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), secrets_namespace);
    let field = "spec.api.postmark.accountTokenSecretRef";
    let secret = credentials::get_secret(&secrets, &reference.name, field)
        .await
        .map_err(|e| e.message)?;
    let token = credentials::secret_value(&secret, &reference.key, field).map_err(|e| e.message)?;
    Client::postmark_account(api, token.trim().to_string()).map_err(|e| e.to_string())
}

/// Sets or removes `DomainVerified` in `conditions`.
pub fn report(
    conditions: &mut Vec<Condition>,
    state: Option<&DomainState>,
    generation: Option<i64>,
) {
    match state {
        Some(s) => condition::set_status(
            conditions,
            DOMAIN_VERIFIED,
            match s.status {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            },
            s.reason,
            &s.message,
            generation,
        ),
        None => conditions.retain(|c| c.type_ != DOMAIN_VERIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::domains::Record;
    use serde_json::json;

    #[test]
    fn the_sending_domain_is_defaultfroms_or_mailguns_and_its_parents_are_tried() {
        let provider: EmailProvider = serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider", "metadata": {"name": "p"},
            "spec": {"defaultFrom": "News <news@Mail.Example.com>",
                     "api": {"provider": "Resend", "secretRef": {"name": "k"}}}}))
        .expect("provider");
        let api = provider.spec.api.clone().expect("api");
        assert_eq!(
            sending_domain(&provider, &api).as_deref(),
            Some("mail.example.com")
        );
        assert_eq!(
            candidates("mail.example.com", ApiProvider::Resend),
            ["mail.example.com", "example.com"]
        );
        assert_eq!(
            candidates("mg.example.com", ApiProvider::Mailgun),
            ["mg.example.com"]
        );
    }

    #[test]
    fn an_unverified_domain_names_the_records_not_found() {
        let record = |name: &str, found| Record {
            purpose: "DKIM".into(),
            kind: "TXT".into(),
            name: name.into(),
            value: "v".into(),
            found: Some(found),
        };
        let checked = Checked {
            name: "example.com".into(),
            verified: false,
            state: "pending".into(),
            records: vec![record("a", true), record("b", false), record("c", false)],
        };
        let state = state_of("Resend", checked);
        assert_eq!(state.reason, Reason::DomainNotVerified);
        assert_eq!(state.status, Some(false));
        assert!(
            state
                .message
                .contains("not found yet: DKIM TXT b, DKIM TXT c"),
            "{}",
            state.message
        );
        assert_eq!(state.domain.map(|d| d.records.len()), Some(3));
    }
}
