//! The services' own suppression lists, as their references give them:
//! Resend `GET /suppressions` (`limit` 1-100, cursor `after`) and `DELETE
//! /suppressions/{id or email}`; Mailtrap `GET /api/suppressions` (cursor
//! `last_id`, `email`) and `DELETE /api/suppressions/{id}`; Postmark `GET
//! /message-streams/{stream}/suppressions/dump` and `POST
//! .../suppressions/delete`; Mailgun `GET /v3/{domain}/bounces|complaints|
//! unsubscribes` (`limit` up to 1000, `paging.next` URLs) and `DELETE
//! .../{address}`; SendGrid `GET /v3/suppression/bounces|spam_reports|
//! unsubscribes` (`limit` 1-500, `offset`) and `DELETE .../{email}`, global
//! unsubscribes at `/v3/asm/suppressions/global/{email}`.

use axum::http::Method;
use serde_json::{Value, json};

use crate::{Answer, Config, Incoming, Service};

/// Why a service lists an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// A hard bounce.
    Bounce,
    /// A spam complaint.
    Complaint,
    /// An unsubscribe (or a manual entry).
    Unsubscribe,
}

/// An address on a service's list.
#[derive(Debug, Clone)]
pub struct Suppression {
    /// The service.
    pub service: Service,
    /// Its id there.
    pub id: String,
    /// The address.
    pub address: String,
    /// Why.
    pub kind: Listed,
}

/// The suppression endpoint `method path` is of, if it is one.
pub(crate) fn service_of(method: &Method, path: &str) -> Option<Service> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["suppressions"]) | ("DELETE", ["suppressions", _]) => Some(Service::Resend),
        ("GET", ["api", "suppressions"]) | ("DELETE", ["api", "suppressions", _]) => {
            Some(Service::Mailtrap)
        }
        ("GET", ["message-streams", _, "suppressions", "dump"])
        | ("POST", ["message-streams", _, "suppressions", "delete"]) => Some(Service::Postmark),
        (
            "GET",
            [
                "v3",
                "suppression",
                "bounces" | "spam_reports" | "unsubscribes",
            ],
        )
        | ("DELETE", ["v3", "suppression", "bounces" | "spam_reports", _])
        | ("DELETE", ["v3", "asm", "suppressions", "global", _]) => Some(Service::SendGrid),
        ("GET", ["v3", _, "bounces" | "complaints" | "unsubscribes"])
        | ("DELETE", ["v3", _, "bounces" | "complaints" | "unsubscribes", _]) => {
            Some(Service::Mailgun)
        }
        _ => None,
    }
}

fn param(query: &[(String, String)], name: &str) -> Option<String> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn decode(segment: &str) -> String {
    percent(segment)
}

/// Percent-decoding of one path segment.
fn percent(segment: &str) -> String {
    form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Answers one suppression request.
pub(crate) fn handle(
    service: Service,
    config: &Config,
    list: &mut Vec<Suppression>,
    incoming: &Incoming<'_>,
    query: &str,
) -> Answer {
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let segments: Vec<&str> = incoming.path.trim_matches('/').split('/').collect();
    let mine = |s: &&Suppression| s.service == service;
    match service {
        Service::Resend => {
            if incoming.bearer() != config.keys.get(&service).map(String::as_str) {
                return Answer::json(
                    401,
                    json!({"statusCode": 401, "name": "restricted_api_key", "message": "This API key is restricted to only send emails"}),
                );
            }
            if incoming.method == Method::DELETE {
                let target = decode(segments[1]);
                let before = list.len();
                list.retain(|s| {
                    !(s.service == service
                        && (s.id == target || s.address.eq_ignore_ascii_case(&target)))
                });
                return if list.len() < before {
                    Answer::json(
                        200,
                        json!({"object": "suppression", "id": target, "deleted": true}),
                    )
                } else {
                    Answer::json(
                        404,
                        json!({"statusCode": 404, "name": "not_found", "message": "Suppression not found"}),
                    )
                };
            }
            let limit = param(&query, "limit").map_or(Ok(20), |l| l.parse::<usize>());
            let Ok(limit) = limit.map_err(|_| ()).and_then(|l| {
                if (1..=100).contains(&l) {
                    Ok(l)
                } else {
                    Err(())
                }
            }) else {
                return Answer::json(
                    422,
                    json!({"statusCode": 422, "name": "validation_error", "message": "The `limit` must be between 1 and 100."}),
                );
            };
            let mine: Vec<&Suppression> = list.iter().filter(mine).collect();
            let start = match param(&query, "after") {
                Some(after) => mine
                    .iter()
                    .position(|s| s.id == after)
                    .map_or(mine.len(), |i| i + 1),
                None => 0,
            };
            let page: Vec<Value> = mine.iter().skip(start).take(limit).map(|s| {
                let origin = match s.kind { Listed::Bounce => "bounce", Listed::Complaint => "complaint", Listed::Unsubscribe => "manual" };
                json!({"id": s.id, "email": s.address, "origin": origin, "source_id": null, "created_at": "2026-12-01 10:00:00.000+00"})
            }).collect();
            Answer::json(
                200,
                json!({"object": "list", "has_more": start + limit < mine.len(), "data": page}),
            )
        }
        Service::Mailtrap => {
            let key = incoming.header("api-token").or_else(|| incoming.bearer());
            if key != config.keys.get(&service).map(String::as_str) {
                return Answer::json(401, json!({"error": "Incorrect API token"}));
            }
            if incoming.method == Method::DELETE {
                let id = decode(segments[2]);
                let at = list.iter().position(|s| s.service == service && s.id == id);
                return match at {
                    Some(i) => {
                        let s = list.remove(i);
                        Answer::json(
                            200,
                            json!({"id": s.id, "email": s.address, "type": "manual import", "sending_stream": "any"}),
                        )
                    }
                    None => Answer::json(404, json!({"error": "Not Found"})),
                };
            }
            let email = param(&query, "email");
            let mine: Vec<&Suppression> = list
                .iter()
                .filter(mine)
                .filter(|s| {
                    email
                        .as_deref()
                        .is_none_or(|e| s.address.eq_ignore_ascii_case(e))
                })
                .collect();
            let start = match param(&query, "last_id") {
                Some(last) => mine
                    .iter()
                    .position(|s| s.id == last)
                    .map_or(mine.len(), |i| i + 1),
                None => 0,
            };
            let page: Vec<Value> = mine.iter().skip(start).take(1000).map(|s| {
                let kind = match s.kind { Listed::Bounce => "hard bounce", Listed::Complaint => "spam complaint", Listed::Unsubscribe => "unsubscription" };
                json!({"id": s.id, "type": kind, "created_at": "2026-12-01T10:00:00Z", "email": s.address, "sending_stream": "transactional", "domain_name": "mailroom.dev"})
            }).collect();
            Answer::json(200, Value::from(page))
        }
        Service::Postmark => {
            if incoming.header("x-postmark-server-token")
                != config.keys.get(&service).map(String::as_str)
            {
                return Answer::json(
                    401,
                    json!({"ErrorCode": 10, "Message": "The Server API token you provided is invalid."}),
                );
            }
            if incoming.method == Method::POST {
                let body: Value = serde_json::from_slice(incoming.raw).unwrap_or(Value::Null);
                let Some(entries) = body["Suppressions"].as_array() else {
                    return Answer::json(
                        422,
                        json!({"ErrorCode": 0, "Message": "Suppressions is required."}),
                    );
                };
                let mut statuses = Vec::new();
                for entry in entries {
                    let address = entry["EmailAddress"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    list.retain(|s| {
                        !(s.service == service && s.address.eq_ignore_ascii_case(&address))
                    });
                    statuses.push(
                        json!({"EmailAddress": address, "Status": "Deleted", "Message": null}),
                    );
                }
                return Answer::json(200, json!({"Suppressions": statuses}));
            }
            let dump: Vec<Value> = list.iter().filter(mine).map(|s| {
                let reason = match s.kind { Listed::Bounce => "HardBounce", Listed::Complaint => "SpamComplaint", Listed::Unsubscribe => "ManualSuppression" };
                json!({"EmailAddress": s.address, "SuppressionReason": reason, "Origin": "Recipient", "CreatedAt": "2026-12-01T10:00:00-05:00"})
            }).collect();
            Answer::json(200, json!({"Suppressions": dump}))
        }
        Service::Mailgun => {
            if crate::mailgun::basic_key(incoming).as_deref()
                != config.keys.get(&service).map(String::as_str)
            {
                return Answer::text(401, "Forbidden");
            }
            if segments[1] != config.mailgun_domain {
                return Answer::json(404, json!({"message": "Domain not found"}));
            }
            let kind = match segments[2] {
                "bounces" => Listed::Bounce,
                "complaints" => Listed::Complaint,
                _ => Listed::Unsubscribe,
            };
            if incoming.method == Method::DELETE {
                let address = decode(segments[3]);
                let before = list.len();
                list.retain(|s| {
                    !(s.service == service
                        && s.kind == kind
                        && s.address.eq_ignore_ascii_case(&address))
                });
                return if list.len() < before {
                    Answer::json(
                        200,
                        json!({"message": "Bounced address has been removed", "address": address}),
                    )
                } else {
                    Answer::json(
                        404,
                        json!({"message": "Address not found in bounces table"}),
                    )
                };
            }
            let limit = param(&query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Answer::json(400, json!({"message": "Limit can't be larger than 1000"}));
            }
            let mine: Vec<&Suppression> = list
                .iter()
                .filter(mine)
                .filter(|s| s.kind == kind)
                .collect();
            let start = match (param(&query, "page").as_deref(), param(&query, "address")) {
                (Some("next"), Some(address)) => mine
                    .iter()
                    .position(|s| s.address == address)
                    .map_or(mine.len(), |i| i + 1),
                _ => 0,
            };
            let items: Vec<Value> = mine.iter().skip(start).take(limit).map(|s| match kind {
                Listed::Bounce => json!({"address": s.address, "code": "550", "error": "No such mailbox", "created_at": "Tue, 01 Dec 2026 10:00:00 UTC"}),
                Listed::Complaint => json!({"address": s.address, "created_at": "Tue, 01 Dec 2026 10:00:00 UTC"}),
                Listed::Unsubscribe => json!({"address": s.address, "tags": ["*"], "created_at": "Tue, 01 Dec 2026 10:00:00 UTC"}),
            }).collect();
            let host = incoming.header("host").unwrap_or("127.0.0.1");
            let base = format!("http://{host}/v3/{}/{}", segments[1], segments[2]);
            let last = mine
                .get((start + limit).min(mine.len()).saturating_sub(1))
                .map(|s| s.address.clone())
                .unwrap_or_default();
            let encoded: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
            Answer::json(
                200,
                json!({"items": items, "paging": {
                "first": format!("{base}?limit={limit}"),
                "last": format!("{base}?page=last&limit={limit}"),
                "next": format!("{base}?page=next&address={encoded}&limit={limit}"),
                "previous": format!("{base}?page=previous&limit={limit}")}}),
            )
        }
        Service::SendGrid => {
            if incoming.bearer() != config.keys.get(&service).map(String::as_str) {
                return Answer::json(
                    403,
                    json!({"errors": [{"field": null, "message": "access forbidden"}]}),
                );
            }
            if incoming.method == Method::DELETE {
                let (kind, email) = match segments.as_slice() {
                    ["v3", "suppression", "bounces", e] => (Listed::Bounce, decode(e)),
                    ["v3", "suppression", "spam_reports", e] => (Listed::Complaint, decode(e)),
                    [.., e] => (Listed::Unsubscribe, decode(e)),
                    [] => return Answer::empty(404),
                };
                list.retain(|s| {
                    !(s.service == service
                        && s.kind == kind
                        && s.address.eq_ignore_ascii_case(&email))
                });
                return Answer::empty(204);
            }
            let kind = match segments[2] {
                "bounces" => Listed::Bounce,
                "spam_reports" => Listed::Complaint,
                _ => Listed::Unsubscribe,
            };
            let limit = param(&query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(500);
            if !(1..=500).contains(&limit) {
                return Answer::json(
                    400,
                    json!({"errors": [{"field": "limit", "message": "limit must be between 1 and 500"}]}),
                );
            }
            let offset = param(&query, "offset")
                .and_then(|o| o.parse::<usize>().ok())
                .unwrap_or(0);
            let page: Vec<Value> = list.iter().filter(mine).filter(|s| s.kind == kind).skip(offset).take(limit).map(|s| match kind {
                Listed::Bounce => json!({"created": 1796119200, "email": s.address, "reason": "550 5.1.1 The email account that you tried to reach does not exist.", "status": "5.1.1"}),
                Listed::Complaint => json!({"created": 1796119200, "email": s.address, "ip": "192.0.2.1"}),
                Listed::Unsubscribe => json!({"created": 1796119200, "email": s.address}),
            }).collect();
            Answer::json(200, Value::from(page))
        }
    }
}
