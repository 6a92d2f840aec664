//! `EmailJournal`: the attempts under way in a namespace. Before a message
//! is sent through a service that cannot drop a repeat by itself, its
//! attempt is recorded here (many attempts in one write), so that after a
//! crash or a leader change the next controller knows the attempt was made
//! and its result never recorded. One object per namespace, named
//! [`JOURNAL_NAME`]; a person may read it, nobody but the controller writes
//! it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The name of the one journal of a namespace.
pub const JOURNAL_NAME: &str = "mailroom-claims";

/// Attempts one journal holds at most: far below the apiserver's object
/// size limit with the longest names. Beyond it an attempt is claimed on
/// its message instead.
pub const MAX_CLAIMS: usize = 2000;

/// The attempts under way in this namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailJournal",
    namespaced,
    shortname = "ejournal",
    category = "mailroom",
    doc = "The send attempts under way in this namespace, each recorded before its message was handed to a server: an attempt listed here whose result is not on its EmailMessage was interrupted. Written by the controller only.",
    printcolumn = r#"{"name":"Claims","type":"integer","jsonPath":".spec.count"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EmailJournalSpec {
    /// How many attempts are listed.
    #[schemars(range(max = 2000))]
    #[serde(default)]
    pub count: u32,
    /// The attempts: each was recorded before its message was handed over,
    /// and leaves the list once its result is on the message.
    #[serde(default)]
    #[schemars(length(max = 2000))]
    pub claims: Vec<JournalClaim>,
}

/// One attempt under way.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JournalClaim {
    /// The EmailMessage's name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The EmailMessage's uid: a message of the same name created again is
    /// another message.
    #[schemars(length(max = 64))]
    pub uid: String,
    /// The attempt's number (the message's `status.attempts` once recorded).
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// When the attempt was claimed.
    pub claimed: Time,
}
