//! The service's own suppression list: read page by page up to a cap, and
//! one address deleted. Resend `GET /suppressions` (cursor `after`) and
//! `DELETE /suppressions/{email}`; Mailtrap `GET /api/suppressions` (cursor
//! `last_id`, `email` filter) and `DELETE /api/suppressions/{id}`; Postmark
//! `GET /message-streams/{stream}/suppressions/dump` and `POST
//! .../suppressions/delete`; Mailgun `GET /v3/{domain}/bounces|complaints|
//! unsubscribes` (following `paging.next`) and `DELETE
//! /v3/{domain}/{list}/{address}`; SendGrid `GET /v3/suppression/bounces|
//! spam_reports|unsubscribes` (`limit`, `offset`) and their `DELETE
//! .../{email}` (global unsubscribes: `/v3/asm/suppressions/global/{email}`).

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Body, Client, ManageError};
use crate::api::provider::{ApiProvider, ApiSpec};

/// Why the service lists an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// It bounced for good.
    Bounce,
    /// Its recipient complained.
    Complaint,
    /// Unsubscribed, blocked or added by hand at the service.
    Other,
}

/// One address on the service's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The address, lower case.
    pub address: String,
    /// Why.
    pub kind: Kind,
    /// The service's words for it.
    pub detail: String,
    /// When the service listed it, if it says.
    pub since: Option<jiff::Timestamp>,
}

/// A date as the services write them: RFC 3339 (Mailtrap, Postmark),
/// Resend's `2023-10-06 23:47:56.678+00`, Mailgun's RFC 2822-like `Thu, 11
/// Dec 2025 01:49:40 UTC`, or SendGrid's unix seconds.
pub fn parse_date(value: &Value) -> Option<jiff::Timestamp> {
    if let Some(seconds) = value.as_i64() {
        return jiff::Timestamp::from_second(seconds).ok();
    }
    let text = value.as_str()?.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    // Resend: an offset of hours only.
    if let Some(t) = text.strip_suffix("+00").and_then(|t| {
        format!("{}Z", t.replacen(' ', "T", 1))
            .parse::<jiff::Timestamp>()
            .ok()
    }) {
        return Some(t);
    }
    // The weekday adds nothing, and a wrong one would refuse the date.
    let dated = text.split_once(", ").map_or(text, |(_, rest)| rest);
    let rfc2822 = dated.replace(" UTC", " +0000").replace(" GMT", " +0000");
    jiff::fmt::rfc2822::parse(&rfc2822)
        .ok()
        .map(|z| z.timestamp())
}

/// The service's list, up to `cap` addresses, and whether it had more.
pub async fn list(
    client: &Client,
    spec: &ApiSpec,
    cap: usize,
) -> Result<(Vec<Listed>, bool), ManageError> {
    let mut found = Vec::new();
    let more = match client.service() {
        ApiProvider::Resend => resend(client, cap, &mut found).await?,
        ApiProvider::Mailtrap => mailtrap(client, cap, &mut found).await?,
        ApiProvider::Postmark => postmark(client, spec, cap, &mut found).await?,
        ApiProvider::Mailgun => mailgun(client, spec, cap, &mut found).await?,
        ApiProvider::SendGrid => sendgrid(client, cap, &mut found).await?,
    };
    Ok((found, more))
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

fn push(found: &mut Vec<Listed>, item: (&Value, &Value), kind: Kind, detail: String) {
    let (address, date) = item;
    let address = text(address).to_ascii_lowercase();
    if address.contains('@') {
        found.push(Listed {
            address,
            kind,
            detail,
            since: parse_date(date),
        });
    }
}

async fn get(client: &Client, path: &str) -> Result<Value, ManageError> {
    client
        .call_large(
            Method::GET,
            path,
            Body::None,
            "reading the suppression list",
        )
        .await
}

/// The largest number of pages read in one pass, whatever the cap.
const MAX_PAGES: usize = 1000;

async fn resend(client: &Client, cap: usize, found: &mut Vec<Listed>) -> Result<bool, ManageError> {
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let path = match &after {
            Some(cursor) => format!("/suppressions?limit=100&after={}", encode(cursor)),
            None => "/suppressions?limit=100".to_string(),
        };
        let page = get(client, &path).await?;
        let items = page["data"].as_array().cloned().unwrap_or_default();
        for item in &items {
            if found.len() >= cap {
                return Ok(true);
            }
            let kind = match item["origin"].as_str() {
                Some("bounce") => Kind::Bounce,
                Some("complaint") => Kind::Complaint,
                _ => Kind::Other,
            };
            let detail = format!("Resend: {}", text(&item["origin"]));
            push(found, (&item["email"], &item["created_at"]), kind, detail);
        }
        if page["has_more"] != true || items.is_empty() {
            return Ok(false);
        }
        after = items.last().map(|i| text(&i["id"]));
    }
    Ok(true)
}

async fn mailtrap(
    client: &Client,
    cap: usize,
    found: &mut Vec<Listed>,
) -> Result<bool, ManageError> {
    let mut last: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let path = match &last {
            Some(id) => format!("/api/suppressions?last_id={}", encode(id)),
            None => "/api/suppressions".to_string(),
        };
        let page = get(client, &path).await?;
        let items = page.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return Ok(false);
        }
        for item in &items {
            if found.len() >= cap {
                return Ok(true);
            }
            let kind = match item["type"].as_str() {
                Some("hard bounce") => Kind::Bounce,
                Some("spam complaint") => Kind::Complaint,
                _ => Kind::Other,
            };
            let detail = format!("Mailtrap: {}", text(&item["type"]));
            push(found, (&item["email"], &item["created_at"]), kind, detail);
        }
        last = items.last().map(|i| text(&i["id"]));
    }
    Ok(true)
}

fn stream(spec: &ApiSpec) -> String {
    spec.postmark
        .as_ref()
        .map(|p| p.message_stream.clone())
        .unwrap_or_else(|| "outbound".into())
}

async fn postmark(
    client: &Client,
    spec: &ApiSpec,
    cap: usize,
    found: &mut Vec<Listed>,
) -> Result<bool, ManageError> {
    let path = format!(
        "/message-streams/{}/suppressions/dump",
        encode(&stream(spec))
    );
    let dump = get(client, &path).await?;
    let items = dump["Suppressions"].as_array().cloned().unwrap_or_default();
    for item in &items {
        if found.len() >= cap {
            return Ok(true);
        }
        let kind = match item["SuppressionReason"].as_str() {
            Some("HardBounce") => Kind::Bounce,
            Some("SpamComplaint") => Kind::Complaint,
            _ => Kind::Other,
        };
        let detail = format!(
            "Postmark: {} ({})",
            text(&item["SuppressionReason"]),
            text(&item["Origin"])
        );
        push(
            found,
            (&item["EmailAddress"], &item["CreatedAt"]),
            kind,
            detail,
        );
    }
    Ok(false)
}

fn domain(spec: &ApiSpec) -> String {
    encode(
        &spec
            .mailgun
            .as_ref()
            .map(|m| m.domain.clone())
            .unwrap_or_default(),
    )
}

/// The path and query of a paging URL on the client's own host, if it is one.
fn own_path(url: &str, client: &Client) -> Option<String> {
    let rest = url.strip_prefix(client.base())?;
    rest.starts_with('/').then(|| rest.to_string())
}

async fn mailgun(
    client: &Client,
    spec: &ApiSpec,
    cap: usize,
    found: &mut Vec<Listed>,
) -> Result<bool, ManageError> {
    for (list, kind) in [
        ("bounces", Kind::Bounce),
        ("complaints", Kind::Complaint),
        ("unsubscribes", Kind::Other),
    ] {
        let mut path = format!("/v3/{}/{list}?limit=1000", domain(spec));
        for _ in 0..MAX_PAGES {
            let page = get(client, &path).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                break;
            }
            for item in &items {
                if found.len() >= cap {
                    return Ok(true);
                }
                let detail = match kind {
                    Kind::Bounce => format!(
                        "Mailgun bounce: {} {}",
                        text(&item["code"]),
                        text(&item["error"])
                    ),
                    Kind::Complaint => "Mailgun complaint".to_string(),
                    Kind::Other => "Mailgun unsubscribe".to_string(),
                };
                push(found, (&item["address"], &item["created_at"]), kind, detail);
            }
            match page["paging"]["next"]
                .as_str()
                .and_then(|next| own_path(next, client))
            {
                Some(next) if next != path => path = next,
                _ => break,
            }
        }
    }
    Ok(false)
}

async fn sendgrid(
    client: &Client,
    cap: usize,
    found: &mut Vec<Listed>,
) -> Result<bool, ManageError> {
    const PAGE: usize = 500;
    for (list, kind) in [
        ("bounces", Kind::Bounce),
        ("spam_reports", Kind::Complaint),
        ("unsubscribes", Kind::Other),
    ] {
        for page_number in 0..MAX_PAGES {
            let path = format!(
                "/v3/suppression/{list}?limit={PAGE}&offset={}",
                page_number * PAGE
            );
            let page = get(client, &path).await?;
            let items = page.as_array().cloned().unwrap_or_default();
            for item in &items {
                if found.len() >= cap {
                    return Ok(true);
                }
                let detail = match kind {
                    Kind::Bounce => format!("SendGrid bounce: {}", text(&item["reason"])),
                    Kind::Complaint => "SendGrid spam report".to_string(),
                    Kind::Other => "SendGrid global unsubscribe".to_string(),
                };
                push(found, (&item["email"], &item["created"]), kind, detail);
            }
            if items.len() < PAGE {
                break;
            }
        }
    }
    Ok(false)
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Deletes `address` (listed as `kind`) from the service's list; one not
/// there is fine.
pub async fn remove(
    client: &Client,
    spec: &ApiSpec,
    address: &str,
    kind: Kind,
) -> Result<(), ManageError> {
    let what = "deleting a suppression";
    let address_path = encode(address);
    let done = match client.service() {
        ApiProvider::Resend => {
            let path = format!("/suppressions/{address_path}");
            client
                .call(Method::DELETE, &path, Body::None, what)
                .await
                .map(|_| ())
        }
        ApiProvider::Mailtrap => {
            let path = format!("/api/suppressions?email={address_path}");
            let listed = client.call(Method::GET, &path, Body::None, what).await?;
            for item in listed.as_array().into_iter().flatten() {
                let path = format!("/api/suppressions/{}", encode(&text(&item["id"])));
                client.call(Method::DELETE, &path, Body::None, what).await?;
            }
            Ok(())
        }
        ApiProvider::Postmark => {
            let path = format!(
                "/message-streams/{}/suppressions/delete",
                encode(&stream(spec))
            );
            let body = json!({"Suppressions": [{"EmailAddress": address}]});
            client
                .call(Method::POST, &path, Body::Json(body), what)
                .await
                .map(|_| ())
        }
        ApiProvider::Mailgun => {
            let list = match kind {
                Kind::Bounce => "bounces",
                Kind::Complaint => "complaints",
                Kind::Other => "unsubscribes",
            };
            let path = format!("/v3/{}/{list}/{address_path}", domain(spec));
            client
                .call(Method::DELETE, &path, Body::None, what)
                .await
                .map(|_| ())
        }
        ApiProvider::SendGrid => {
            let path = match kind {
                Kind::Bounce => format!("/v3/suppression/bounces/{address_path}"),
                Kind::Complaint => format!("/v3/suppression/spam_reports/{address_path}"),
                Kind::Other => format!("/v3/asm/suppressions/global/{address_path}"),
            };
            client
                .call(Method::DELETE, &path, Body::None, what)
                .await
                .map(|_| ())
        }
    };
    match done {
        Err(ManageError::Refused { status: 404, .. }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_services_dates_are_read() {
        let at = |v: Value| parse_date(&v).map(|t| t.to_string());
        assert_eq!(
            at(json!("2025-01-15T10:30:00Z")).as_deref(),
            Some("2025-01-15T10:30:00Z")
        );
        assert_eq!(
            at(json!("2026-12-01T10:00:00-05:00")).as_deref(),
            Some("2026-12-01T15:00:00Z")
        );
        assert_eq!(
            at(json!("2023-10-06 23:47:56.678+00")).as_deref(),
            Some("2023-10-06T23:47:56.678Z")
        );
        assert_eq!(
            at(json!("Thu, 11 Dec 2025 01:49:40 UTC")).as_deref(),
            Some("2025-12-11T01:49:40Z")
        );
        assert_eq!(
            at(json!("Mon, 11 Dec 2025 01:49:40 GMT")).as_deref(),
            Some("2025-12-11T01:49:40Z")
        );
        assert_eq!(
            at(json!(1443651141)).as_deref(),
            Some("2015-09-30T22:12:21Z")
        );
        assert_eq!(at(json!("yesterday")), None);
    }
}
