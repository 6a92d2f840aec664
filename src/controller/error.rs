//! Errors of a reconcile: the kube API failed. Everything else (bad input, a
//! refused message, an unreachable server) is an outcome written to status.

/// How soon an object whose write met a newer version is looked at again:
/// soon, as the newer version brings its own reconcile.
pub const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// A reconcile that could not finish; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// A message's attachment could not be read from the API.
    #[error("attachments: {field}: reading it failed: {source}")]
    Attachments {
        /// The field whose object was being read.
        field: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The ledger of what was sent could not be read.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::pages::Error),
    /// The claim journal could not be written: nothing was sent.
    #[error("claim journal: {0}")]
    Journal(String),
    /// A status write kept conflicting with other writers.
    #[error("the status write conflicted {0} times in a row")]
    Contended(u32),
}

impl Error {
    /// Whether the failure is an optimistic-concurrency conflict (HTTP 409):
    /// the object changed since it was read, and the change brings a new
    /// reconcile with it.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    /// Whether the object is gone (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 404)
    }
}
