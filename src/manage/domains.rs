//! The sending domain as the service sees it: whether it is verified and
//! each DNS record the service wants, with the value to publish and
//! whether the service found it. One read per service, from its documented
//! endpoint: Resend `GET /domains` then `/domains/{id}`, Mailtrap `GET
//! /api/domains`, Postmark `GET /domains` then `/domains/{id}` (account
//! token), Mailgun `GET /v4/domains/{name}`, SendGrid `GET
//! /v3/whitelabel/domains?domain=`.

use reqwest::Method;
use serde_json::Value;

use super::client::{Body, Client, ManageError};
use crate::api::provider::ApiProvider;

/// The most records kept.
pub const MAX_RECORDS: usize = 20;
/// The longest record value kept.
const MAX_VALUE: usize = 1024;

/// One DNS record the service wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What it is for: SPF, DKIM, ReturnPath, Tracking, MX, DMARC, ...
    pub purpose: String,
    /// TXT, CNAME, MX.
    pub kind: String,
    /// The DNS name.
    pub name: String,
    /// The value to publish.
    pub value: String,
    /// Whether the service found it (`None` when it does not say).
    pub found: Option<bool>,
}

/// The domain as the service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The domain.
    pub name: String,
    /// Whether the service counts it verified.
    pub verified: bool,
    /// What the service calls its state, e.g. `pending`, `unverified`.
    pub state: String,
    /// The records it wants.
    pub records: Vec<Record>,
}

fn string(value: &Value) -> String {
    match value {
        Value::String(s) => s
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_VALUE)
            .collect(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn record(
    purpose: &Value,
    kind: &Value,
    name: &Value,
    value: &Value,
    found: Option<bool>,
) -> Record {
    Record {
        purpose: string(purpose),
        kind: string(kind).to_ascii_uppercase(),
        name: string(name),
        value: string(value),
        found,
    }
}

/// `domain` at the service (`None`: the service does not know it).
pub async fn check(client: &Client, domain: &str) -> Result<Option<Checked>, ManageError> {
    let mut checked = match client.service() {
        ApiProvider::Resend => resend(client, domain).await?,
        ApiProvider::Mailtrap => mailtrap(client, domain).await?,
        ApiProvider::Postmark => postmark(client, domain).await?,
        ApiProvider::Mailgun => mailgun(client, domain).await?,
        ApiProvider::SendGrid => sendgrid(client, domain).await?,
    };
    if let Some(checked) = checked.as_mut() {
        checked.records.truncate(MAX_RECORDS);
    }
    Ok(checked)
}

async fn get(client: &Client, path: &str, what: &str) -> Result<Value, ManageError> {
    client.call(Method::GET, path, Body::None, what).await
}

fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value[key].as_array().into_iter().flatten()
}

async fn resend(client: &Client, domain: &str) -> Result<Option<Checked>, ManageError> {
    let all = get(client, "/domains", "listing domains").await?;
    let Some(found) = list(&all, "data").find(|d| string(&d["name"]).eq_ignore_ascii_case(domain))
    else {
        return Ok(None);
    };
    let id = string(&found["id"]);
    let one = get(client, &format!("/domains/{id}"), "reading a domain").await?;
    let state = string(&one["status"]);
    let records = list(&one, "records")
        .map(|r| {
            record(
                &r["record"],
                &r["type"],
                &r["name"],
                &r["value"],
                Some(r["status"] == "verified"),
            )
        })
        .collect();
    Ok(Some(Checked {
        name: string(&one["name"]),
        verified: state == "verified",
        state,
        records,
    }))
}

async fn mailtrap(client: &Client, domain: &str) -> Result<Option<Checked>, ManageError> {
    let all = get(client, "/api/domains", "listing domains").await?;
    let Some(found) =
        list(&all, "data").find(|d| string(&d["domain_name"]).eq_ignore_ascii_case(domain))
    else {
        return Ok(None);
    };
    let records = list(found, "dns_records")
        .map(|r| {
            let name = match string(&r["name"]) {
                n if n.is_empty() => string(&r["domain"]),
                n => format!("{n}.{}", string(&r["domain"])),
            };
            record(
                &r["key"],
                &r["type"],
                &Value::String(name),
                &r["value"],
                Some(r["status"] == "pass"),
            )
        })
        .collect();
    Ok(Some(Checked {
        name: string(&found["domain_name"]),
        verified: found["dns_verified"] == true,
        state: string(&found["compliance_status"]),
        records,
    }))
}

async fn postmark(client: &Client, domain: &str) -> Result<Option<Checked>, ManageError> {
    // Pages of 500, at most 10 (an account with more domains than that is
    // looked up no further).
    for page in 0..10 {
        let path = format!("/domains?count=500&offset={}", page * 500);
        let all = get(client, &path, "listing domains").await?;
        if let Some(found) =
            list(&all, "Domains").find(|d| string(&d["Name"]).eq_ignore_ascii_case(domain))
        {
            let id = string(&found["ID"]);
            let d = get(client, &format!("/domains/{id}"), "reading a domain").await?;
            let flag = |key: &str| Some(d[key] == true);
            let records = vec![
                record(
                    &"SPF".into(),
                    &"TXT".into(),
                    &d["SPFHost"],
                    &d["SPFTextValue"],
                    flag("SPFVerified"),
                ),
                record(
                    &"DKIM".into(),
                    &"TXT".into(),
                    &d["DKIMHost"],
                    &d["DKIMTextValue"],
                    flag("DKIMVerified"),
                ),
                record(
                    &"ReturnPath".into(),
                    &"CNAME".into(),
                    &d["ReturnPathDomain"],
                    &d["ReturnPathDomainCNAMEValue"],
                    flag("ReturnPathDomainVerified"),
                ),
            ];
            // Postmark sends with DKIM verified; SPF and the return path
            // align the envelope.
            let verified = d["DKIMVerified"] == true && d["ReturnPathDomainVerified"] == true;
            return Ok(Some(Checked {
                name: string(&d["Name"]),
                verified,
                state: if verified { "verified" } else { "pending" }.into(),
                records,
            }));
        }
        let total = all["TotalCount"].as_u64().unwrap_or(0);
        if (page + 1) * 500 >= total {
            break;
        }
    }
    Ok(None)
}

async fn mailgun(client: &Client, domain: &str) -> Result<Option<Checked>, ManageError> {
    let path = format!(
        "/v4/domains/{}",
        form_urlencoded::byte_serialize(domain.as_bytes()).collect::<String>()
    );
    let found = match get(client, &path, "reading a domain").await {
        Ok(found) => found,
        Err(ManageError::Refused { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let purpose = |r: &Value| -> Value {
        let name = string(&r["name"]);
        let value = string(&r["value"]);
        if value.starts_with("v=spf1") {
            "SPF".into()
        } else if name.contains("._domainkey.") {
            "DKIM".into()
        } else {
            "Tracking".into()
        }
    };
    let records = list(&found, "sending_dns_records")
        .map(|r| {
            record(
                &purpose(r),
                &r["record_type"],
                &r["name"],
                &r["value"],
                Some(r["valid"] == "valid"),
            )
        })
        .collect();
    let state = string(&found["domain"]["state"]);
    Ok(Some(Checked {
        name: string(&found["domain"]["name"]),
        verified: state == "active",
        state,
        records,
    }))
}

async fn sendgrid(client: &Client, domain: &str) -> Result<Option<Checked>, ManageError> {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("domain", domain)
        .finish();
    let all = get(
        client,
        &format!("/v3/whitelabel/domains?{query}"),
        "listing authenticated domains",
    )
    .await?;
    let Some(found) = all
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| string(&d["domain"]).eq_ignore_ascii_case(domain))
    else {
        return Ok(None);
    };
    let records = ["mail_cname", "dkim1", "dkim2"]
        .iter()
        .filter_map(|key| {
            let r = found["dns"].get(*key)?;
            let purpose = if key.starts_with("dkim") {
                "DKIM"
            } else {
                "ReturnPath"
            };
            Some(record(
                &purpose.into(),
                &r["type"],
                &r["host"],
                &r["data"],
                r["valid"].as_bool(),
            ))
        })
        .collect();
    let verified = found["valid"] == true;
    Ok(Some(Checked {
        name: string(&found["domain"]),
        verified,
        state: if verified { "valid" } else { "invalid" }.into(),
        records,
    }))
}
