//! Reads a message's attachments from the Secret and ConfigMap keys it names,
//! in the message's namespace, just before it is sent, and holds them to the
//! provider's size cap. File contents are never logged. A Secret is attached
//! only when it carries the label `mailroom.dev/attachable: "true"`: whoever
//! may create an EmailMessage must not be able to mail out Secrets their own
//! RBAC does not let them read.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;

use crate::api::message::Attachment as AttachmentSpec;
use crate::api::provider::KeyRef;
use crate::compose::Attachment;
use crate::controller::attachment_memory::{NoRoom, Taken};

/// Why a message's attachments cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A Secret, ConfigMap or key does not exist (yet): the message waits.
    #[error("{field}: {what}")]
    Missing {
        /// The field, e.g. `spec.attachments[0].secretKeyRef`.
        field: String,
        /// What is missing.
        what: String,
    },
    /// A Secret that has not opted in to being attached: the message can
    /// never be sent as it is.
    #[error(
        "{field}: Secret {secret:?} may not be attached: only Secrets labelled {ATTACHABLE_LABEL}: \"true\" can be (set by whoever owns the Secret)"
    )]
    NotAllowed {
        /// The field, e.g. `spec.attachments[0].secretKeyRef`.
        field: String,
        /// The Secret's name.
        secret: String,
    },
    /// The attachments add up to more than the provider allows: the message
    /// can never be sent as it is.
    #[error(
        "{field}: the attachments add up to {total} bytes, more than the provider's maxAttachmentBytes ({cap})"
    )]
    TooLarge {
        /// The first attachment that passes the cap.
        field: String,
        /// The bytes counted up to and including it.
        total: u64,
        /// The cap.
        cap: u64,
    },
    /// Other messages hold the controller's attachment memory now: the
    /// message looks again shortly.
    #[error("{field}: no attachment memory free now")]
    NoRoomNow {
        /// The attachment that found no room.
        field: String,
    },
    /// The files need more memory than the controller gives one namespace's
    /// messages at once: the message can never be sent as it is.
    #[error(
        "{field}: the attachments need more memory than this controller holds for one namespace's messages at once ({share} bytes, half of --max-attachment-memory-mib)"
    )]
    NeverRoom {
        /// The attachment that found no room.
        field: String,
        /// The namespace's share, in bytes.
        share: u64,
    },
    /// The API server could not be asked.
    #[error("{field}: reading it failed: {source}")]
    Api {
        /// The field whose object was being read.
        field: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The label a Secret must carry, with the value `"true"`, to be attached.
pub const ATTACHABLE_LABEL: &str = "mailroom.dev/attachable";

/// Reads every attachment of a message in `namespace`, in order, failing
/// once their total passes `cap` bytes; `memory` counts what is held (room
/// for each read before it, the file after it).
pub async fn load(
    client: &Client,
    namespace: &str,
    specs: &[AttachmentSpec],
    cap: u64,
    memory: &mut Taken,
) -> Result<Vec<Attachment>, LoadError> {
    let mut total = 0u64;
    let mut loaded = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let field = format!("spec.attachments[{i}]");
        memory.before_read().map_err(|no_room| match no_room {
            NoRoom::Busy => LoadError::NoRoomNow {
                field: field.clone(),
            },
            NoRoom::Never { share } => LoadError::NeverRoom {
                field: field.clone(),
                share,
            },
        })?;
        let read = read(client, namespace, spec, &field).await;
        memory.after_read(read.as_ref().map_or(0, |content| content.len() as u64));
        let content = read?;
        total += content.len() as u64;
        if total > cap {
            return Err(LoadError::TooLarge { field, total, cap });
        }
        loaded.push(Attachment {
            filename: spec.filename.clone(),
            content_type: content_type(spec),
            content,
            content_id: spec.content_id.clone(),
        });
    }
    Ok(loaded)
}

/// The spec's type, or the one the file name implies.
pub fn content_type(spec: &AttachmentSpec) -> String {
    spec.content_type.clone().unwrap_or_else(|| {
        mime_guess::from_path(&spec.filename)
            .first_or_octet_stream()
            .essence_str()
            .to_string()
    })
}

async fn read(
    client: &Client,
    namespace: &str,
    spec: &AttachmentSpec,
    field: &str,
) -> Result<Vec<u8>, LoadError> {
    if let Some(key_ref) = &spec.secret_key_ref {
        let field = format!("{field}.secretKeyRef");
        let secret: Secret = fetch(client, namespace, key_ref, "Secret", &field).await?;
        if !attachable(&secret) {
            return Err(LoadError::NotAllowed {
                field,
                secret: key_ref.name.clone(),
            });
        }
        let bytes = secret
            .data
            .and_then(|mut data| data.remove(&key_ref.key))
            .map(|bytes| bytes.0);
        return bytes.ok_or_else(|| no_key(field, "Secret", key_ref));
    }
    if let Some(key_ref) = &spec.config_map_key_ref {
        let field = format!("{field}.configMapKeyRef");
        let map: ConfigMap = fetch(client, namespace, key_ref, "ConfigMap", &field).await?;
        let text = map
            .data
            .and_then(|mut data| data.remove(&key_ref.key))
            .map(String::into_bytes);
        let binary = || {
            map.binary_data
                .and_then(|mut data| data.remove(&key_ref.key))
                .map(|bytes| bytes.0)
        };
        return text
            .or_else(binary)
            .ok_or_else(|| no_key(field, "ConfigMap", key_ref));
    }
    Err(LoadError::Missing {
        field: field.to_string(),
        what: "set secretKeyRef or configMapKeyRef".to_string(),
    })
}

/// The Secret or ConfigMap `key_ref` names, or Missing when it does not exist.
async fn fetch<K>(
    client: &Client,
    namespace: &str,
    key_ref: &KeyRef,
    kind: &str,
    field: &str,
) -> Result<K, LoadError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(&key_ref.name)
        .await
        .map_err(|source| LoadError::Api {
            field: field.to_string(),
            source,
        })?
        .ok_or_else(|| LoadError::Missing {
            field: field.to_string(),
            what: format!("{kind} {:?} not found", key_ref.name),
        })
}

/// Whether the Secret's owner let it be attached.
fn attachable(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(ATTACHABLE_LABEL))
        .is_some_and(|value| value == "true")
}

fn no_key(field: String, kind: &str, key_ref: &KeyRef) -> LoadError {
    LoadError::Missing {
        field,
        what: format!("{kind} {:?} has no key {:?}", key_ref.name, key_ref.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(filename: &str, content_type: Option<&str>) -> AttachmentSpec {
        AttachmentSpec {
            filename: filename.into(),
            content_type: content_type.map(str::to_string),
            content_id: None,
            secret_key_ref: None,
            config_map_key_ref: None,
        }
    }

    #[test]
    fn content_type_comes_from_the_spec_or_the_file_name() {
        assert_eq!(content_type(&spec("logo.png", None)), "image/png");
        assert_eq!(content_type(&spec("invoice.pdf", None)), "application/pdf");
        assert_eq!(
            content_type(&spec("data.unknownext", None)),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(&spec("report.bin", Some("text/csv"))),
            "text/csv"
        );
    }
}
