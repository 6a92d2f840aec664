//! The journal's pages in the apiserver: one `EmailJournal` per namespace,
//! listed once at start, read again after a failed write, created with the
//! first claim and then replaced whole, guarded by the resourceVersion last
//! seen, so two writers cannot both think their claims are listed.

use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use crate::api::journal::{EmailJournal, EmailJournalSpec, JOURNAL_NAME, JournalClaim};

/// A call to the apiserver about a namespace's journal failed.
#[derive(Debug, thiserror::Error)]
#[error("EmailJournal {namespace}/{JOURNAL_NAME}: {source}")]
pub struct Error {
    /// The journal's namespace (`*` for a list of all).
    pub namespace: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

impl Error {
    fn new(namespace: &str, source: kube::Error) -> Self {
        Self {
            namespace: namespace.to_string(),
            source,
        }
    }

    /// Whether the page changed since it was read (or was created
    /// meanwhile).
    pub fn is_conflict(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if s.code == 409)
    }
}

/// Journals per list request at start.
const LIST_PAGE_SIZE: u32 = 50;

/// A journal as read: its namespace, version and attempts.
pub struct Read {
    /// The namespace.
    pub namespace: String,
    /// Its resourceVersion.
    pub version: Option<String>,
    /// The attempts it lists.
    pub claims: Vec<JournalClaim>,
}

fn read_of(page: EmailJournal) -> Read {
    Read {
        namespace: page.namespace().unwrap_or_default(),
        version: page.resource_version(),
        claims: page.spec.claims,
    }
}

/// Lists every journal (in `namespace`, or all), calling `each` per journal.
pub async fn list(
    client: &Client,
    namespace: Option<&str>,
    mut each: impl FnMut(Read),
) -> Result<(), Error> {
    let api: Api<EmailJournal> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default().limit(LIST_PAGE_SIZE);
    loop {
        let listed = api
            .list(&params)
            .await
            .map_err(|e| Error::new(namespace.unwrap_or("*"), e))?;
        let next = listed.metadata.continue_.clone().filter(|c| !c.is_empty());
        for page in listed.items {
            if page.name_any() == JOURNAL_NAME {
                each(read_of(page));
            }
        }
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Reads `namespace`'s journal; `None` when there is none.
pub async fn read(client: &Client, namespace: &str) -> Result<Option<Read>, Error> {
    let api: Api<EmailJournal> = Api::namespaced(client.clone(), namespace);
    api.get_opt(JOURNAL_NAME)
        .await
        .map(|page| page.map(read_of))
        .map_err(|e| Error::new(namespace, e))
}

/// Writes `claims` as `namespace`'s journal: created when `version` is
/// `None`, else replaced guarded by it. Returns the new version.
pub async fn write(
    client: &Client,
    namespace: &str,
    version: Option<&str>,
    claims: Vec<JournalClaim>,
) -> Result<String, Error> {
    let api: Api<EmailJournal> = Api::namespaced(client.clone(), namespace);
    let page = EmailJournal {
        metadata: ObjectMeta {
            name: Some(JOURNAL_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version: version.map(str::to_string),
            ..ObjectMeta::default()
        },
        spec: EmailJournalSpec {
            count: u32::try_from(claims.len()).unwrap_or(u32::MAX),
            claims,
        },
    };
    let params = PostParams::default();
    let written = match version {
        None => api.create(&params, &page).await,
        Some(_) => api.replace(JOURNAL_NAME, &params, &page).await,
    }
    .map_err(|e| Error::new(namespace, e))?;
    Ok(written.resource_version().unwrap_or_default())
}
