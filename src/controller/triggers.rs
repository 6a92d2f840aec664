//! Metadata-only watches that wake reconcilers. A trigger needs only an
//! object's name and namespace, so these watches ask the apiserver for
//! `PartialObjectMetadata`: no Secret value, ConfigMap data or spec is ever
//! streamed into the process, whatever else the cluster holds (Helm keeps a
//! Secret of hundreds of KiB per release revision). Referenced Secrets and
//! ConfigMaps are read with a GET when a provider is verified.

use std::fmt::Debug;

use futures::Stream;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::api;

/// Secrets of this type are Helm's release records: never a credential a
/// provider names, and often the largest and most numerous Secrets of a
/// cluster. The apiserver filters them out of the watch.
pub const HELM_RELEASE_SECRET_TYPE: &str = "helm.sh/release.v1";

/// Every change to the objects `api` reaches (created, changed, deleted), as
/// metadata: an `Api` of `PartialObjectMeta` makes metadata-only requests.
pub fn metadata<K>(
    api: Api<PartialObjectMeta<K>>,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    selected(api, watcher::Config::default())
}

fn selected<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    watcher(api, config).touched_objects()
}

/// Changes to the Secrets of `namespace` (all namespaces when `None`), as
/// metadata, Helm's release Secrets left out.
pub fn secrets(
    client: &Client,
    namespace: Option<&str>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + use<> {
    let config = watcher::Config::default().fields(&format!("type!={HELM_RELEASE_SECRET_TYPE}"));
    selected(api::<PartialObjectMeta<Secret>>(client, namespace), config)
}

/// Changes to the ConfigMaps of `namespace` (all namespaces when `None`), as
/// metadata.
pub fn config_maps(
    client: &Client,
    namespace: Option<&str>,
) -> impl Stream<Item = Result<PartialObjectMeta<ConfigMap>, watcher::Error>> + Send + use<> {
    metadata(api::<PartialObjectMeta<ConfigMap>>(client, namespace))
}
