//! The services' sending-domain endpoints, as their references give them:
//! Resend `GET /domains` and `/domains/{id}` (resend-openapi), Mailtrap
//! `GET /api/domains` (mailtrap-openapi `email-sending`), Postmark `GET
//! /domains` and `/domains/{id}` with the account token (postmark.js
//! `AccountClient`), Mailgun `GET /v4/domains/{name}` (mailgun openapi),
//! SendGrid `GET /v3/whitelabel/domains?domain=` (sendgrid-oai
//! `tsg_domain_authentication_v3`). The domains are the config's, each
//! verified or not; the records are the ones each service asks for.

use axum::http::Method;
use serde_json::{Value, json};

use crate::{Answer, Config, Incoming, Service};

/// A sending domain the fake services know.
#[derive(Debug, Clone)]
pub struct FakeDomain {
    /// The domain, e.g. `mailroom.dev`.
    pub name: String,
    /// Whether every record is in DNS.
    pub verified: bool,
}

/// The domain endpoint `method path` is of, if it is one.
pub(crate) fn service_of(method: &Method, path: &str) -> Option<Service> {
    if method != Method::GET {
        return None;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        // Resend and Postmark share `/domains`: Postmark's carry its
        // account token header.
        ["domains"] | ["domains", _] => Some(Service::Resend),
        ["api", "domains"] => Some(Service::Mailtrap),
        ["v3", "whitelabel", "domains"] => Some(Service::SendGrid),
        _ => None,
    }
}

fn find<'a>(config: &'a Config, name: &str) -> Option<(usize, &'a FakeDomain)> {
    config
        .domains
        .iter()
        .enumerate()
        .find(|(_, d)| d.name.eq_ignore_ascii_case(name))
}

/// Answers one domain request (auth checked as the service checks it).
pub(crate) fn handle(
    service: Service,
    config: &Config,
    incoming: &Incoming<'_>,
    query: &str,
) -> Answer {
    let segments: Vec<&str> = incoming.path.trim_matches('/').split('/').collect();
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match service {
        Service::Resend if incoming.header("x-postmark-account-token").is_some() => {
            postmark(config, incoming, &segments, &param)
        }
        Service::Resend if incoming.header("x-postmark-server-token").is_some() => Answer::json(
            401,
            json!({"ErrorCode": 10, "Message": "Request does not contain a valid Account API token. Please verify that you are using a valid token."}),
        ),
        Service::Resend => resend(config, incoming, &segments),
        Service::Mailtrap => mailtrap(config, incoming),
        Service::SendGrid => sendgrid(config, incoming, &param),
        _ => Answer::json(404, json!({"message": "not found"})),
    }
}

fn resend_records(domain: &FakeDomain) -> Value {
    let status = if domain.verified {
        "verified"
    } else {
        "pending"
    };
    json!([
        {"record": "SPF", "name": format!("send.{}", domain.name), "type": "MX", "ttl": "Auto", "status": status, "value": "feedback-smtp.us-east-1.amazonses.com", "priority": 10},
        {"record": "SPF", "name": format!("send.{}", domain.name), "type": "TXT", "ttl": "Auto", "status": status, "value": "v=spf1 include:amazonses.com ~all"},
        {"record": "DKIM", "name": format!("resend._domainkey.{}", domain.name), "type": "TXT", "ttl": "Auto", "status": status, "value": "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDx"}
    ])
}

fn resend(config: &Config, incoming: &Incoming<'_>, segments: &[&str]) -> Answer {
    let key = incoming.bearer();
    if key != config.keys.get(&Service::Resend).map(String::as_str) {
        let restricted = key == config.send_only.get(&Service::Resend).map(String::as_str);
        return Answer::json(
            401,
            if restricted {
                json!({"statusCode": 401, "name": "restricted_api_key", "message": "This API key is restricted to only send emails"})
            } else {
                json!({"statusCode": 401, "name": "validation_error", "message": "API key is invalid"})
            },
        );
    }
    let status = |d: &FakeDomain| if d.verified { "verified" } else { "pending" };
    match segments {
        ["domains"] => {
            let data: Vec<Value> = config
                .domains
                .iter()
                .enumerate()
                .map(|(i, d)| json!({"id": format!("d91cd9bd-1176-453e-8fc1-{i:012x}"), "name": d.name, "status": status(d), "created_at": "2026-12-01 10:00:00.000+00", "region": "us-east-1"}))
                .collect();
            Answer::json(
                200,
                json!({"object": "list", "has_more": false, "data": data}),
            )
        }
        ["domains", id] => {
            let index = id
                .strip_prefix("d91cd9bd-1176-453e-8fc1-")
                .and_then(|i| usize::from_str_radix(i, 16).ok());
            match index.and_then(|i| config.domains.get(i)) {
                Some(d) => Answer::json(
                    200,
                    json!({"object": "domain", "id": id, "name": d.name, "status": status(d), "created_at": "2026-12-01 10:00:00.000+00", "region": "us-east-1", "records": resend_records(d)}),
                ),
                None => Answer::json(
                    404,
                    json!({"statusCode": 404, "name": "not_found", "message": "Domain not found"}),
                ),
            }
        }
        _ => Answer::json(
            404,
            json!({"statusCode": 404, "name": "not_found", "message": "Not found"}),
        ),
    }
}

fn mailtrap(config: &Config, incoming: &Incoming<'_>) -> Answer {
    let key = incoming.header("api-token").or_else(|| incoming.bearer());
    if key != config.keys.get(&Service::Mailtrap).map(String::as_str) {
        return Answer::json(401, json!({"error": "Incorrect API token"}));
    }
    let data: Vec<Value> = config
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let status = if d.verified { "pass" } else { "missing" };
            json!({"id": 3938 + i, "domain_name": d.name, "demo": false,
                   "compliance_status": if d.verified { "compliant" } else { "unverified_dns" },
                   "dns_verified": d.verified, "dns_verified_at": if d.verified { json!("2026-12-01T10:00:00Z") } else { Value::Null },
                   "dns_records": [
                       {"key": "verification", "domain": d.name, "name": "", "status": status, "type": "CNAME", "value": "smtp.mailtrap.live"},
                       {"key": "spf", "domain": d.name, "name": "", "status": status, "type": "TXT", "value": "v=spf1 include:_spf.smtp.mailtrap.live ~all"},
                       {"key": "dkim1", "domain": d.name, "name": "rwmt1._domainkey", "status": status, "type": "CNAME", "value": "rwmt1.dkim.smtp.mailtrap.live"},
                       {"key": "dmarc", "domain": d.name, "name": "_dmarc", "status": status, "type": "TXT", "value": "v=DMARC1; p=none; rua=mailto:dmarc@smtp.mailtrap.live; ruf=mailto:dmarc@smtp.mailtrap.live; rf=afrf; pct=100"}
                   ]})
        })
        .collect();
    Answer::json(200, json!({"data": data}))
}

fn postmark(
    config: &Config,
    incoming: &Incoming<'_>,
    segments: &[&str],
    param: &dyn Fn(&str) -> Option<String>,
) -> Answer {
    if incoming.header("x-postmark-account-token") != Some(config.postmark_account_token.as_str()) {
        return Answer::json(
            401,
            json!({"ErrorCode": 10, "Message": "Request does not contain a valid Account API token. Please verify that you are using a valid token."}),
        );
    }
    match segments {
        ["domains"] => {
            let (Some(count), Some(offset)) = (param("count"), param("offset")) else {
                return Answer::json(
                    422,
                    json!({"ErrorCode": 0, "Message": "The 'count' and 'offset' parameters are required."}),
                );
            };
            let (Ok(count), Ok(offset)) = (count.parse::<usize>(), offset.parse::<usize>()) else {
                return Answer::json(
                    422,
                    json!({"ErrorCode": 0, "Message": "The 'count' and 'offset' parameters must be numbers."}),
                );
            };
            if count == 0 || count > 500 {
                return Answer::json(
                    422,
                    json!({"ErrorCode": 0, "Message": "The 'count' parameter must be between 1 and 500."}),
                );
            }
            let list: Vec<Value> = config
                .domains
                .iter()
                .enumerate()
                .skip(offset)
                .take(count)
                .map(|(i, d)| json!({"Name": d.name, "SPFVerified": d.verified, "DKIMVerified": d.verified, "WeakDKIM": false, "ReturnPathDomainVerified": d.verified, "ID": 36735 + i}))
                .collect();
            Answer::json(
                200,
                json!({"TotalCount": config.domains.len(), "Domains": list}),
            )
        }
        ["domains", id] => {
            let index = id.parse::<usize>().ok().and_then(|i| i.checked_sub(36735));
            match index.and_then(|i| config.domains.get(i)) {
                Some(d) => Answer::json(
                    200,
                    json!({"Name": d.name, "SPFVerified": d.verified,
                    "SPFHost": d.name, "SPFTextValue": "v=spf1 a mx include:spf.mtasv.net ~all",
                    "DKIMVerified": d.verified, "WeakDKIM": false,
                    "DKIMHost": format!("20261201._domainkey.{}", d.name),
                    "DKIMTextValue": "k=rsa;p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCFn",
                    "DKIMPendingHost": "", "DKIMPendingTextValue": "", "DKIMRevokedHost": "",
                    "DKIMRevokedTextValue": "", "SafeToRemoveRevokedKeyFromDNS": false,
                    "DKIMUpdateStatus": "Verified",
                    "ReturnPathDomain": format!("pm-bounces.{}", d.name),
                    "ReturnPathDomainCNAMEValue": "pm.mtasv.net",
                    "ReturnPathDomainVerified": d.verified, "ID": id.parse::<u64>().unwrap_or(0)}),
                ),
                None => Answer::json(
                    422,
                    json!({"ErrorCode": 510, "Message": "This domain was not found."}),
                ),
            }
        }
        _ => Answer::json(404, json!({"ErrorCode": 0, "Message": "Not found."})),
    }
}

fn sendgrid(
    config: &Config,
    incoming: &Incoming<'_>,
    param: &dyn Fn(&str) -> Option<String>,
) -> Answer {
    let key = incoming.bearer();
    if key != config.keys.get(&Service::SendGrid).map(String::as_str) {
        let restricted = key == config.send_only.get(&Service::SendGrid).map(String::as_str);
        return Answer::json(
            if restricted { 403 } else { 401 },
            json!({"errors": [{"field": null, "message": if restricted { "access forbidden" } else { "authorization required" }}]}),
        );
    }
    let wanted = param("domain");
    let list: Vec<Value> = config
        .domains
        .iter()
        .enumerate()
        .filter(|(_, d)| wanted.as_deref().is_none_or(|w| d.name.eq_ignore_ascii_case(w)))
        .map(|(i, d)| {
            let record = |host: String, data: &str| json!({"valid": d.verified, "type": "cname", "host": host, "data": data});
            json!({"id": 45373692 + i, "user_id": 66036447, "subdomain": "em123", "domain": d.name,
                   "username": "mailroom", "ips": [], "custom_spf": false, "default": i == 0,
                   "legacy": false, "automatic_security": true, "valid": d.verified,
                   "dns": {"mail_cname": record(format!("em123.{}", d.name), "u7.wl.sendgrid.net"),
                           "dkim1": record(format!("s1._domainkey.{}", d.name), "s1.domainkey.u7.wl.sendgrid.net"),
                           "dkim2": record(format!("s2._domainkey.{}", d.name), "s2.domainkey.u7.wl.sendgrid.net")}})
        })
        .collect();
    Answer::json(200, Value::from(list))
}

/// Mailgun's `GET /v4/domains/{name}` answer for a known domain.
pub(crate) fn mailgun(config: &Config, name: &str) -> Value {
    let verified = find(config, name).is_none_or(|(_, d)| d.verified);
    let valid = if verified { "valid" } else { "unknown" };
    json!({"domain": {"name": name, "state": if verified { "active" } else { "unverified" }, "type": "custom",
               "created_at": "Tue, 01 Dec 2026 10:00:00 GMT", "id": "123456789012345678901234",
               "require_tls": false, "spam_action": "disabled", "web_prefix": "email", "web_scheme": "https",
               "use_automatic_sender_security": true, "smtp_login": format!("postmaster@{name}")},
    "receiving_dns_records": [
        {"is_active": true, "cached": [], "priority": "10", "record_type": "MX", "valid": valid, "value": "mxa.mailgun.org"}
    ],
    "sending_dns_records": [
        {"is_active": true, "cached": [], "name": name, "record_type": "TXT", "valid": valid, "value": "v=spf1 include:mailgun.org ~all"},
        {"is_active": true, "cached": [], "name": format!("pic._domainkey.{name}"), "record_type": "TXT", "valid": valid, "value": "k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ"},
        {"is_active": true, "cached": [], "name": format!("email.{name}"), "record_type": "CNAME", "valid": valid, "value": "mailgun.org"}
    ]})
}
