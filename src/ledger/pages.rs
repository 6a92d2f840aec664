//! The ledger's pages in the apiserver: listed once at start, appended to
//! with a JSON Patch that sends only the new entries (guarded by a test of
//! the page's count, so two writers cannot interleave), created when the
//! newest is full, read on a hit, deleted when their windows end.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::book::{Append, Entry, PageInfo};
use super::identity::Identity;
use crate::api::ledger::{EmailLedger, EmailLedgerSpec, LedgerEntry, PAGE_LABEL};

/// A call to the apiserver about a ledger page failed.
#[derive(Debug, thiserror::Error)]
#[error("EmailLedger {namespace}/{page}: {source}")]
pub struct Error {
    /// The page's namespace.
    pub namespace: String,
    /// The page's name (or `*` for a list).
    pub page: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

impl Error {
    fn new(namespace: &str, page: &str, source: kube::Error) -> Self {
        Self {
            namespace: namespace.to_string(),
            page: page.to_string(),
            source,
        }
    }

    /// Whether the apiserver refused the write because the page changed
    /// (a failed test, a conflict) or exists already.
    pub fn is_stale_page(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if matches!(s.code, 409 | 422))
    }

    /// Whether the page does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if s.code == 404)
    }
}

/// Pages per list request at start.
const LIST_PAGE_SIZE: u32 = 20;

/// The name of page `number`.
pub fn name_of(number: u32) -> String {
    format!("sent-{number:06}")
}

/// The number in a page's name.
pub fn number_of(name: &str) -> Option<u32> {
    name.strip_prefix("sent-")?.parse().ok()
}

fn api(client: &Client, namespace: &str) -> Api<EmailLedger> {
    Api::namespaced(client.clone(), namespace)
}

/// A page as listed: its namespace, number, size and its entries' identities.
pub struct Listed {
    /// The page's namespace.
    pub namespace: String,
    /// The page's number.
    pub number: u32,
    /// Its size and end of window.
    pub info: PageInfo,
    /// Each entry's identity and end of window.
    pub ids: Vec<(Identity, Timestamp)>,
}

/// Lists every page (in `namespace`, or all), calling `each` per page so
/// that no more than one list response is held at once.
pub async fn list(
    client: &Client,
    namespace: Option<&str>,
    mut each: impl FnMut(Listed),
) -> Result<(), Error> {
    let api: Api<EmailLedger> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default()
        .labels(PAGE_LABEL)
        .limit(LIST_PAGE_SIZE);
    loop {
        let list = api
            .list(&params)
            .await
            .map_err(|e| Error::new(namespace.unwrap_or("*"), "*", e))?;
        for page in list.items {
            let Some(number) = number_of(&page.name_any()) else {
                continue;
            };
            let ids = page
                .spec
                .entries
                .iter()
                .filter_map(|e| Some((Identity::parse(&e.id)?, e.until.0)))
                .collect();
            each(Listed {
                namespace: page.namespace().unwrap_or_default(),
                number,
                info: PageInfo {
                    count: page.spec.count,
                    until: page.spec.until.0,
                },
                ids,
            });
        }
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

fn stored(entry: &Entry) -> LedgerEntry {
    LedgerEntry {
        id: entry.id.as_str().to_string(),
        name: entry.name.clone(),
        sent: Time(entry.sent),
        until: Time(entry.until),
        provider_message_id: entry.provider_message_id.clone(),
    }
}

/// Writes `append`: creates its page, or adds its entries to the end of it.
pub async fn write(
    client: &Client,
    namespace: &str,
    append: &Append,
    page_until: Timestamp,
) -> Result<(), Error> {
    let name = name_of(append.page);
    let api = api(client, namespace);
    let entries: Vec<LedgerEntry> = append.entries.iter().map(stored).collect();
    let count = append.count_before + entries.len() as u32;
    if append.create {
        let page = EmailLedger {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some([(PAGE_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            spec: EmailLedgerSpec {
                count,
                until: Time(page_until),
                entries,
            },
        };
        api.create(&PostParams::default(), &page)
            .await
            .map_err(|e| Error::new(namespace, &name, e))?;
        return Ok(());
    }
    let mut ops = vec![
        json!({"op": "test", "path": "/spec/count", "value": append.count_before}),
        json!({"op": "replace", "path": "/spec/count", "value": count}),
        json!({"op": "replace", "path": "/spec/until", "value": Time(page_until)}),
    ];
    ops.extend(
        entries
            .iter()
            .map(|e| json!({"op": "add", "path": "/spec/entries/-", "value": e})),
    );
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::from(ops))
        .map_err(|e| Error::new(namespace, &name, kube::Error::SerdeError(e)))?;
    api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| Error::new(namespace, &name, e))?;
    Ok(())
}

/// The entry for `id` on page `number`, if the page holds one.
pub async fn read(
    client: &Client,
    namespace: &str,
    number: u32,
    id: &Identity,
) -> Result<Option<Entry>, Error> {
    let name = name_of(number);
    let page = match api(client, namespace).get(&name).await {
        Ok(page) => page,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(Error::new(namespace, &name, e)),
    };
    Ok(page
        .spec
        .entries
        .into_iter()
        .find(|e| e.id == id.as_str())
        .map(|e| Entry {
            id: id.clone(),
            name: e.name,
            sent: e.sent.0,
            until: e.until.0,
            provider_message_id: e.provider_message_id,
        }))
}

/// Deletes page `number` (gone already is fine).
pub async fn delete(client: &Client, namespace: &str, number: u32) -> Result<(), Error> {
    let name = name_of(number);
    match api(client, namespace)
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::new(namespace, &name, e)),
    }
}
