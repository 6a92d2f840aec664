//! The services' webhook management endpoints, as their references give
//! them: Resend `/webhooks` (resend-openapi), Mailtrap `/api/webhooks`
//! (mailtrap-openapi `email-sending`), Postmark `/webhooks` (postmark.js
//! `ServerClient`), Mailgun `/v3|v4/domains/{domain}/webhooks` and
//! `/v5/accounts/http_signing_key` (mailgun openapi), SendGrid
//! `/v3/user/webhooks/event/settings` (sendgrid-oai `tsg_webhooks_v3`). Each
//! subscription keeps the signer the service would sign its events with, so
//! a test can post events exactly as the registered webhook would.
//!
//! A key in [`crate::Config::send_only`] sends but is refused here, as a
//! restricted key is.

use std::sync::Arc;

use axum::http::Method;
use serde_json::{Value, json};

use crate::webhook::Signer;
use crate::{Answer, Config, Incoming, Service};

/// A webhook subscription at a service.
#[derive(Clone)]
pub struct Subscription {
    /// The service.
    pub service: Service,
    /// Its id at the service (Mailgun: its URL).
    pub id: String,
    /// Where events go.
    pub url: String,
    /// The events subscribed, as the service names them.
    pub events: Vec<String>,
    /// Whether it is enabled.
    pub active: bool,
    /// How the service signs the events it posts there.
    pub signer: Arc<Signer>,
}

/// Every subscription, and the account-wide keys.
#[derive(Default)]
pub(crate) struct Subscriptions {
    pub list: Vec<Subscription>,
    next: u64,
    mailgun_key: Option<Arc<Signer>>,
}

impl Subscriptions {
    fn id(&mut self, service: Service) -> String {
        self.next += 1;
        match service {
            Service::Resend => format!("4dd369bc-aa82-4ff3-97de-{:012x}", self.next),
            Service::SendGrid => format!("77d4a5da-7015-11ed-a1eb-{:012x}", self.next),
            _ => self.next.to_string(),
        }
    }

    fn mailgun_key(&mut self) -> Arc<Signer> {
        self.mailgun_key
            .get_or_insert_with(|| Arc::new(Signer::generate(Service::Mailgun)))
            .clone()
    }
}

/// The management endpoint `method path` is of, if it is one.
pub(crate) fn service_of(method: &Method, path: &str) -> Option<Service> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        (_, ["api", "webhooks"]) | (_, ["api", "webhooks", _]) => Some(Service::Mailtrap),
        (_, ["v3", "user", "webhooks", "event", "settings", ..]) => Some(Service::SendGrid),
        (_, ["v3" | "v4", "domains", _, "webhooks", ..])
        | (_, ["v5", "accounts", "http_signing_key"]) => Some(Service::Mailgun),
        // Resend and Postmark share `/webhooks`: Postmark's requests carry
        // its server token header, Resend's a bearer token.
        (_, ["webhooks"]) | (_, ["webhooks", _]) => Some(Service::Resend),
        _ => None,
    }
}

/// Answers one management request.
pub(crate) fn handle(
    service: Service,
    config: &Config,
    subscriptions: &mut Subscriptions,
    incoming: &Incoming<'_>,
    query: &str,
) -> Answer {
    let service = match service {
        Service::Resend if incoming.header("x-postmark-server-token").is_some() => {
            Service::Postmark
        }
        other => other,
    };
    if let Some(refusal) = unauthorized(service, config, incoming) {
        return refusal;
    }
    let segments: Vec<&str> = incoming.path.trim_matches('/').split('/').collect();
    let body = if incoming.raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(incoming.raw).unwrap_or(Value::Null)
    };
    match service {
        Service::Resend => resend(subscriptions, incoming, &segments, &body),
        Service::Mailtrap => mailtrap(subscriptions, incoming, &segments, &body),
        Service::Postmark => postmark(subscriptions, incoming, &segments, &body, query),
        Service::Mailgun => mailgun(config, subscriptions, incoming, &segments, query),
        Service::SendGrid => sendgrid(subscriptions, incoming, &segments, &body),
    }
}

/// The service's answer to a missing, wrong or send-only key.
fn unauthorized(service: Service, config: &Config, incoming: &Incoming<'_>) -> Option<Answer> {
    let presented = match service {
        Service::Resend | Service::SendGrid => incoming.bearer().map(str::to_string),
        Service::Mailtrap => incoming
            .header("api-token")
            .map(str::to_string)
            .or_else(|| incoming.bearer().map(str::to_string)),
        Service::Postmark => incoming
            .header("x-postmark-server-token")
            .map(str::to_string),
        Service::Mailgun => crate::mailgun::basic_key(incoming),
    };
    let valid = presented.as_deref() == config.keys.get(&service).map(String::as_str);
    let send_only = presented.as_deref() == config.send_only.get(&service).map(String::as_str);
    if valid {
        return None;
    }
    Some(match (service, send_only) {
        (Service::Resend, true) => Answer::json(
            401,
            json!({"statusCode": 401, "name": "restricted_api_key", "message": "This API key is restricted to only send emails"}),
        ),
        (Service::Resend, false) => Answer::json(
            401,
            json!({"statusCode": 401, "name": "validation_error", "message": "API key is invalid"}),
        ),
        (Service::Mailtrap, true) => Answer::json(403, json!({"errors": "Access forbidden"})),
        (Service::Mailtrap, false) => Answer::json(401, json!({"error": "Incorrect API token"})),
        (Service::Postmark, _) => Answer::json(
            401,
            json!({"ErrorCode": 10, "Message": "The Server Token you provided in the X-Postmark-Server-Token request header was invalid. Please verify that you are using a valid token."}),
        ),
        (Service::Mailgun, _) => Answer::json(401, json!({"message": "Invalid private key"})),
        (Service::SendGrid, true) => Answer::json(
            403,
            json!({"errors": [{"field": null, "message": "access forbidden"}]}),
        ),
        (Service::SendGrid, false) => Answer::json(
            401,
            json!({"errors": [{"field": null, "message": "The provided authorization grant is invalid, expired, or revoked"}]}),
        ),
    })
}

fn is_https(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(' '))
}

fn find<'a>(
    subscriptions: &'a mut Subscriptions,
    service: Service,
    id: &str,
) -> Option<&'a mut Subscription> {
    subscriptions
        .list
        .iter_mut()
        .find(|s| s.service == service && s.id == id)
}

fn remove(subscriptions: &mut Subscriptions, service: Service, id: &str) -> Option<Subscription> {
    let at = subscriptions
        .list
        .iter()
        .position(|s| s.service == service && s.id == id)?;
    Some(subscriptions.list.remove(at))
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The secret a signer was made with (Resend, Mailtrap).
fn signing_secret(signer: &Signer) -> String {
    signer
        .secret_data()
        .get("signingSecret")
        .cloned()
        .unwrap_or_default()
}

const RESEND_EVENTS: &[&str] = &[
    "email.sent",
    "email.delivered",
    "email.delivery_delayed",
    "email.bounced",
    "email.complained",
    "email.opened",
    "email.clicked",
    "email.failed",
    "email.scheduled",
    "email.suppressed",
    "email.received",
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "domain.created",
    "domain.updated",
    "domain.deleted",
];

fn resend_error(status: u16, name: &str, message: &str) -> Answer {
    Answer::json(
        status,
        json!({"statusCode": status, "name": name, "message": message}),
    )
}

fn resend(
    subscriptions: &mut Subscriptions,
    incoming: &Incoming<'_>,
    segments: &[&str],
    body: &Value,
) -> Answer {
    let resend_events = |events: &Value| {
        strings(events)
            .filter(|e| !e.is_empty() && e.iter().all(|e| RESEND_EVENTS.contains(&e.as_str())))
    };
    match (incoming.method.as_str(), segments) {
        ("GET", ["webhooks"]) => {
            let data: Vec<Value> = subscriptions
                .list
                .iter()
                .filter(|s| s.service == Service::Resend)
                .map(|s| json!({"id": s.id, "endpoint": s.url, "events": s.events, "status": if s.active {"enabled"} else {"disabled"}, "created_at": "2026-12-07 10:00:00.000+00"}))
                .collect();
            Answer::json(
                200,
                json!({"object": "list", "has_more": false, "data": data}),
            )
        }
        ("POST", ["webhooks"]) => {
            if !incoming.is_json() {
                return resend_error(422, "validation_error", "Invalid content type");
            }
            let Some(endpoint) = body["endpoint"].as_str().filter(|u| is_https(u)) else {
                return resend_error(
                    422,
                    "validation_error",
                    "The `endpoint` field must be a valid URL.",
                );
            };
            let Some(events) = resend_events(&body["events"]) else {
                return resend_error(
                    422,
                    "validation_error",
                    "The `events` field must be a non-empty array of event types.",
                );
            };
            if let Some(key) = body
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "endpoint" && *k != "events"))
            {
                return resend_error(422, "validation_error", &format!("Unknown field `{key}`."));
            }
            let id = subscriptions.id(Service::Resend);
            let signer = Arc::new(Signer::generate(Service::Resend));
            let secret = signing_secret(&signer);
            subscriptions.list.push(Subscription {
                service: Service::Resend,
                id: id.clone(),
                url: endpoint.to_string(),
                events,
                active: true,
                signer,
            });
            Answer::json(
                201,
                json!({"object": "webhook", "id": id, "signing_secret": secret}),
            )
        }
        ("GET", ["webhooks", id]) => match find(subscriptions, Service::Resend, id) {
            Some(s) => Answer::json(
                200,
                json!({"object": "webhook", "id": s.id, "endpoint": s.url, "events": s.events, "status": if s.active {"enabled"} else {"disabled"}, "created_at": "2026-12-07 10:00:00.000+00", "signing_secret": signing_secret(&s.signer)}),
            ),
            None => resend_error(404, "not_found", "Webhook not found"),
        },
        ("PATCH", ["webhooks", id]) => {
            let events = match body.get("events") {
                Some(events) => match resend_events(events) {
                    Some(events) => Some(events),
                    None => {
                        return resend_error(
                            422,
                            "validation_error",
                            "The `events` field must be a non-empty array of event types.",
                        );
                    }
                },
                None => None,
            };
            let endpoint = match body.get("endpoint") {
                Some(Value::String(u)) if is_https(u) => Some(u.clone()),
                Some(_) => {
                    return resend_error(
                        422,
                        "validation_error",
                        "The `endpoint` field must be a valid URL.",
                    );
                }
                None => None,
            };
            let status = match body.get("status").map(Value::as_str) {
                Some(Some("enabled")) => Some(true),
                Some(Some("disabled")) => Some(false),
                Some(_) => {
                    return resend_error(
                        422,
                        "validation_error",
                        "The `status` field must be `enabled` or `disabled`.",
                    );
                }
                None => None,
            };
            match find(subscriptions, Service::Resend, id) {
                Some(s) => {
                    if let Some(events) = events {
                        s.events = events;
                    }
                    if let Some(url) = endpoint {
                        s.url = url;
                    }
                    if let Some(active) = status {
                        s.active = active;
                    }
                    Answer::json(200, json!({"object": "webhook", "id": s.id}))
                }
                None => resend_error(404, "not_found", "Webhook not found"),
            }
        }
        ("DELETE", ["webhooks", id]) => match remove(subscriptions, Service::Resend, id) {
            Some(s) => Answer::json(
                200,
                json!({"object": "webhook", "id": s.id, "deleted": true}),
            ),
            None => resend_error(404, "not_found", "Webhook not found"),
        },
        _ => resend_error(
            405,
            "method_not_allowed",
            "Method is not allowed for the requested path.",
        ),
    }
}

const MAILTRAP_EVENTS: &[&str] = &[
    "delivery",
    "soft_bounce",
    "bounce",
    "suspension",
    "unsubscribe",
    "open",
    "spam_complaint",
    "click",
    "reject",
];

fn mailtrap_webhook(s: &Subscription, stream: &str) -> Value {
    json!({"id": s.id.parse::<u64>().unwrap_or(0), "url": s.url, "active": s.active,
           "webhook_type": "email_sending", "payload_format": "json", "sending_stream": stream,
           "domain_id": null, "inbound_inbox_id": null, "event_types": s.events})
}

fn mailtrap(
    subscriptions: &mut Subscriptions,
    incoming: &Incoming<'_>,
    segments: &[&str],
    body: &Value,
) -> Answer {
    let invalid = |field: &str, why: &str| Answer::json(422, json!({"errors": {field: [why]}}));
    let events_of = |value: &Value| {
        strings(value)
            .filter(|e| !e.is_empty() && e.iter().all(|e| MAILTRAP_EVENTS.contains(&e.as_str())))
    };
    match (incoming.method.as_str(), segments) {
        ("GET", ["api", "webhooks"]) => {
            let data: Vec<Value> = subscriptions
                .list
                .iter()
                .filter(|s| s.service == Service::Mailtrap)
                .map(|s| mailtrap_webhook(s, "transactional"))
                .collect();
            Answer::json(200, json!({"data": data}))
        }
        ("POST", ["api", "webhooks"]) => {
            if !incoming.is_json() {
                return invalid("webhook", "must be a JSON object");
            }
            let webhook = &body["webhook"];
            let Some(url) = webhook["url"].as_str().filter(|u| is_https(u)) else {
                return invalid("url", "is not a valid URL");
            };
            if webhook["webhook_type"] != "email_sending"
                && !["campaigns", "audit_log", "inbound_receiving"]
                    .contains(&webhook["webhook_type"].as_str().unwrap_or_default())
            {
                return invalid("webhook_type", "is not included in the list");
            }
            if webhook["webhook_type"] != "email_sending" {
                return invalid("webhook_type", "is not supported by this fake");
            }
            if !matches!(
                webhook["sending_stream"].as_str(),
                Some("transactional" | "bulk")
            ) {
                return invalid("sending_stream", "is required for email_sending webhooks");
            }
            if !matches!(
                webhook.get("payload_format").map(Value::as_str),
                None | Some(Some("json" | "jsonlines"))
            ) {
                return invalid("payload_format", "is not included in the list");
            }
            let Some(events) = events_of(&webhook["event_types"]) else {
                return invalid("event_types", "is required for email_sending webhooks");
            };
            let id = subscriptions.id(Service::Mailtrap);
            let signer = Arc::new(Signer::generate(Service::Mailtrap));
            let secret = signing_secret(&signer);
            let subscription = Subscription {
                service: Service::Mailtrap,
                id,
                url: url.to_string(),
                events,
                active: webhook["active"].as_bool().unwrap_or(true),
                signer,
            };
            let stream = webhook["sending_stream"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut data = mailtrap_webhook(&subscription, &stream);
            data["signing_secret"] = json!(secret);
            subscriptions.list.push(subscription);
            Answer::json(200, json!({"data": data}))
        }
        ("GET", ["api", "webhooks", id]) => match find(subscriptions, Service::Mailtrap, id) {
            Some(s) => Answer::json(200, json!({"data": mailtrap_webhook(s, "transactional")})),
            None => Answer::json(404, json!({"error": "Not Found"})),
        },
        ("PATCH", ["api", "webhooks", id]) => {
            let webhook = &body["webhook"];
            let events = match webhook.get("event_types") {
                Some(value) => match events_of(value) {
                    Some(events) => Some(events),
                    None => return invalid("event_types", "is not included in the list"),
                },
                None => None,
            };
            if webhook
                .get("url")
                .is_some_and(|u| !u.as_str().is_some_and(is_https))
            {
                return invalid("url", "is not a valid URL");
            }
            match find(subscriptions, Service::Mailtrap, id) {
                Some(s) => {
                    if let Some(events) = events {
                        s.events = events;
                    }
                    if let Some(url) = webhook["url"].as_str() {
                        s.url = url.to_string();
                    }
                    if let Some(active) = webhook["active"].as_bool() {
                        s.active = active;
                    }
                    Answer::json(200, json!({"data": mailtrap_webhook(s, "transactional")}))
                }
                None => Answer::json(404, json!({"error": "Not Found"})),
            }
        }
        ("DELETE", ["api", "webhooks", id]) => match remove(subscriptions, Service::Mailtrap, id) {
            Some(s) => Answer::json(200, json!({"data": mailtrap_webhook(&s, "transactional")})),
            None => Answer::json(404, json!({"error": "Not Found"})),
        },
        _ => Answer::json(404, json!({"error": "Not Found"})),
    }
}

const POSTMARK_TRIGGERS: &[&str] = &[
    "Open",
    "Click",
    "Delivery",
    "Bounce",
    "SpamComplaint",
    "SubscriptionChange",
];

fn postmark_error(code: u16, message: &str) -> Answer {
    Answer::json(422, json!({"ErrorCode": code, "Message": message}))
}

fn postmark_webhook(s: &Subscription, stream: &str) -> Value {
    let on = |name: &str| s.events.iter().any(|e| e == name);
    let (username, password) = match s.signer.as_ref() {
        Signer::Postmark { username, password } => (username.clone(), password.clone()),
        _ => (String::new(), String::new()),
    };
    json!({"ID": s.id.parse::<u64>().unwrap_or(0), "Url": s.url, "MessageStream": stream,
           "HttpAuth": {"Username": username, "Password": password}, "HttpHeaders": [],
           "Triggers": {"Open": {"Enabled": on("Open"), "PostFirstOpenOnly": false},
                        "Click": {"Enabled": on("Click")}, "Delivery": {"Enabled": on("Delivery")},
                        "Bounce": {"Enabled": on("Bounce"), "IncludeContent": false},
                        "SpamComplaint": {"Enabled": on("SpamComplaint"), "IncludeContent": false},
                        "SubscriptionChange": {"Enabled": on("SubscriptionChange")}}})
}

/// The triggers enabled in a Postmark `Triggers` object, or why it is not one.
fn postmark_triggers(triggers: &Value) -> Result<Vec<String>, Answer> {
    let Some(object) = triggers.as_object() else {
        return Err(postmark_error(402, "Triggers must be an object."));
    };
    let mut enabled = Vec::new();
    for (name, trigger) in object {
        if !POSTMARK_TRIGGERS.contains(&name.as_str()) {
            return Err(postmark_error(
                402,
                &format!("The trigger '{name}' is not valid."),
            ));
        }
        match trigger["Enabled"].as_bool() {
            Some(true) => enabled.push(name.clone()),
            Some(false) => {}
            None => {
                return Err(postmark_error(
                    402,
                    &format!("{name}.Enabled must be a boolean."),
                ));
            }
        }
    }
    Ok(enabled)
}

fn postmark_auth(auth: &Value) -> Result<Option<(String, String)>, Answer> {
    match auth {
        Value::Null => Ok(None),
        Value::Object(_) => match (auth["Username"].as_str(), auth["Password"].as_str()) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() && !u.contains(':') => {
                Ok(Some((u.to_string(), p.to_string())))
            }
            _ => Err(postmark_error(
                402,
                "HttpAuth needs a Username (without ':') and a Password.",
            )),
        },
        _ => Err(postmark_error(402, "HttpAuth must be an object.")),
    }
}

fn postmark(
    subscriptions: &mut Subscriptions,
    incoming: &Incoming<'_>,
    segments: &[&str],
    body: &Value,
    query: &str,
) -> Answer {
    let stream = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "MessageStream")
        .map(|(_, v)| v.into_owned());
    match (incoming.method.as_str(), segments) {
        ("GET", ["webhooks"]) => {
            let list: Vec<Value> = subscriptions
                .list
                .iter()
                .filter(|s| s.service == Service::Postmark)
                .map(|s| postmark_webhook(s, stream.as_deref().unwrap_or("outbound")))
                .collect();
            Answer::json(200, json!({"Webhooks": list}))
        }
        ("POST", ["webhooks"]) => {
            if !incoming.is_json() || incoming.header("accept") != Some("application/json") {
                return Answer::json(
                    415,
                    json!({"ErrorCode": 0, "Message": "Send Accept and Content-Type: application/json."}),
                );
            }
            let Some(url) = body["Url"].as_str().filter(|u| is_https(u)) else {
                return postmark_error(402, "The Url is not valid.");
            };
            let auth = match postmark_auth(&body["HttpAuth"]) {
                Ok(auth) => auth,
                Err(answer) => return answer,
            };
            let events = match postmark_triggers(&body["Triggers"]) {
                Ok(events) => events,
                Err(answer) => return answer,
            };
            let (username, password) = auth.unwrap_or_default();
            let id = subscriptions.id(Service::Postmark);
            let subscription = Subscription {
                service: Service::Postmark,
                id,
                url: url.to_string(),
                events,
                active: true,
                signer: Arc::new(Signer::Postmark { username, password }),
            };
            let answer = postmark_webhook(
                &subscription,
                body["MessageStream"].as_str().unwrap_or("outbound"),
            );
            subscriptions.list.push(subscription);
            Answer::json(200, answer)
        }
        ("GET", ["webhooks", id]) => match find(subscriptions, Service::Postmark, id) {
            Some(s) => Answer::json(200, postmark_webhook(s, "outbound")),
            None => postmark_error(1600, "The webhook was not found."),
        },
        ("PUT", ["webhooks", id]) => {
            let auth = match postmark_auth(&body["HttpAuth"]) {
                Ok(auth) => auth,
                Err(answer) => return answer,
            };
            let events = match body.get("Triggers") {
                Some(triggers) => match postmark_triggers(triggers) {
                    Ok(events) => Some(events),
                    Err(answer) => return answer,
                },
                None => None,
            };
            if body
                .get("Url")
                .is_some_and(|u| !u.as_str().is_some_and(is_https))
            {
                return postmark_error(402, "The Url is not valid.");
            }
            match find(subscriptions, Service::Postmark, id) {
                Some(s) => {
                    if let Some(events) = events {
                        s.events = events;
                    }
                    if let Some(url) = body["Url"].as_str() {
                        s.url = url.to_string();
                    }
                    if let Some((username, password)) = auth {
                        s.signer = Arc::new(Signer::Postmark { username, password });
                    }
                    Answer::json(200, postmark_webhook(s, "outbound"))
                }
                None => postmark_error(1600, "The webhook was not found."),
            }
        }
        ("DELETE", ["webhooks", id]) => match remove(subscriptions, Service::Postmark, id) {
            Some(_) => Answer::json(
                200,
                json!({"ErrorCode": 0, "Message": "Webhook 1234 removed."}),
            ),
            None => postmark_error(1600, "The webhook was not found."),
        },
        _ => Answer::json(404, json!({"ErrorCode": 0, "Message": "Not found."})),
    }
}

const MAILGUN_EVENTS: &[&str] = &[
    "accepted",
    "clicked",
    "opened",
    "unsubscribed",
    "delivered",
    "permanent_fail",
    "temporary_fail",
    "complained",
];

fn mailgun_all(subscriptions: &Subscriptions) -> Value {
    let mut webhooks = serde_json::Map::new();
    for event in MAILGUN_EVENTS {
        let urls: Vec<&str> = subscriptions
            .list
            .iter()
            .filter(|s| s.service == Service::Mailgun && s.events.iter().any(|e| e == event))
            .map(|s| s.url.as_str())
            .collect();
        if !urls.is_empty() {
            webhooks.insert(event.to_string(), json!({"urls": urls}));
        }
    }
    json!({"webhooks": webhooks})
}

fn mailgun(
    config: &Config,
    subscriptions: &mut Subscriptions,
    incoming: &Incoming<'_>,
    segments: &[&str],
    query: &str,
) -> Answer {
    let bad = |reason: &str| Answer::json(400, json!({"Reason": reason}));
    let form: Vec<(String, String)> = if incoming
        .content_type()
        .starts_with("application/x-www-form-urlencoded")
    {
        form_urlencoded::parse(incoming.raw).into_owned().collect()
    } else {
        Vec::new()
    };
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    match (incoming.method.as_str(), segments) {
        ("GET", ["v5", "accounts", "http_signing_key"]) => {
            let key = subscriptions.mailgun_key();
            let data = key.secret_data();
            Answer::json(200, json!({"http_signing_key": data.get("signingKey")}))
        }
        (_, ["v3" | "v4", "domains", domain, ..]) if *domain != config.mailgun_domain => {
            Answer::json(404, json!({"message": "Domain not found"}))
        }
        ("GET", ["v3", "domains", _, "webhooks"]) => Answer::json(200, mailgun_all(subscriptions)),
        ("POST" | "PUT", ["v4", "domains", _, "webhooks"]) => {
            if form.is_empty() {
                return bad(
                    "invalid parameters: the body must be application/x-www-form-urlencoded",
                );
            }
            let url = form
                .iter()
                .find(|(k, _)| k == "url")
                .map(|(_, v)| v.clone());
            let Some(url) = url.filter(|u| is_https(u)) else {
                return bad("invalid parameters: url is not a valid url: invalid URL scheme");
            };
            let events: Vec<String> = form
                .iter()
                .filter(|(k, _)| k == "event_types")
                .map(|(_, v)| v.clone())
                .collect();
            if events.is_empty() {
                return bad("invalid parameters: event_types is required");
            }
            if let Some(unknown) = events
                .iter()
                .find(|e| !MAILGUN_EVENTS.contains(&e.as_str()))
            {
                return bad(&format!(
                    "invalid parameters: '{unknown}' is not a valid event type"
                ));
            }
            if let Some((k, _)) = form.iter().find(|(k, _)| k != "url" && k != "event_types") {
                return bad(&format!("invalid parameters: unknown parameter '{k}'"));
            }
            let existing = find(subscriptions, Service::Mailgun, &url).is_some();
            if incoming.method == Method::POST {
                if existing {
                    let event = &events[0];
                    return bad(&format!(
                        "Webhook for event type '{event}' with URL '{url}' already exists"
                    ));
                }
                let signer = subscriptions.mailgun_key();
                subscriptions.list.push(Subscription {
                    service: Service::Mailgun,
                    id: url.clone(),
                    url,
                    events,
                    active: true,
                    signer,
                });
            } else {
                match find(subscriptions, Service::Mailgun, &url) {
                    Some(s) => s.events = events,
                    None => return Answer::json(404, json!({"Description": "Webhook not found"})),
                }
            }
            Answer::json(200, mailgun_all(subscriptions))
        }
        ("DELETE", ["v4", "domains", _, "webhooks"]) => {
            let Some((_, urls)) = query.iter().find(|(k, _)| k == "url") else {
                return bad("Field: url");
            };
            let mut removed = 0;
            for url in urls.split(',') {
                removed += usize::from(remove(subscriptions, Service::Mailgun, url).is_some());
            }
            if removed == 0 {
                return Answer::json(404, json!({"Description": "Webhook not found"}));
            }
            Answer::json(200, mailgun_all(subscriptions))
        }
        _ => Answer::json(404, json!({"message": "Not found"})),
    }
}

/// A SendGrid settings body: its url, enabled, and the events it names.
type Settings = (Option<String>, Option<bool>, Option<Vec<String>>);

const SENDGRID_EVENTS: &[&str] = &[
    "group_resubscribe",
    "delivered",
    "group_unsubscribe",
    "spam_report",
    "bounce",
    "deferred",
    "unsubscribe",
    "processed",
    "open",
    "click",
    "dropped",
];

fn sendgrid_webhook(s: &Subscription, signed: bool) -> Value {
    let mut object = json!({"id": s.id, "url": s.url, "enabled": s.active,
        "account_status_change": false, "friendly_name": null,
        "created_date": "2026-12-07T10:00:00Z", "updated_date": "2026-12-07T10:00:00Z",
        "oauth_client_id": null, "oauth_token_url": null});
    for event in SENDGRID_EVENTS {
        object[*event] = json!(s.events.iter().any(|e| e == event));
    }
    if signed {
        object["public_key"] = json!(s.signer.secret_data().get("verificationKey"));
    }
    object
}

fn sendgrid(
    subscriptions: &mut Subscriptions,
    incoming: &Incoming<'_>,
    segments: &[&str],
    body: &Value,
) -> Answer {
    let error = |status: u16, message: &str| {
        Answer::json(status, json!({"errors": [{"message": message}]}))
    };
    let settings = |body: &Value| -> Result<Settings, Answer> {
        let Some(object) = body.as_object() else {
            return Err(error(400, "invalid JSON"));
        };
        let mut events = Vec::new();
        let mut named = false;
        for (key, value) in object {
            match key.as_str() {
                "url"
                | "friendly_name"
                | "oauth_client_id"
                | "oauth_client_secret"
                | "oauth_token_url"
                | "enabled" => {}
                event if SENDGRID_EVENTS.contains(&event) => {
                    named = true;
                    match value.as_bool() {
                        Some(true) => events.push(event.to_string()),
                        Some(false) => {}
                        None => return Err(error(400, &format!("{event} must be a boolean"))),
                    }
                }
                other => return Err(error(400, &format!("unknown field: {other}"))),
            }
        }
        let url = match body.get("url") {
            Some(Value::String(u)) if is_https(u) => Some(u.clone()),
            Some(Value::String(u)) => {
                return Err(error(400, &format!("'{u}' is not a valid url")));
            }
            Some(_) => return Err(error(400, "url must be a string")),
            None => None,
        };
        Ok((url, body["enabled"].as_bool(), named.then_some(events)))
    };
    match (incoming.method.as_str(), segments) {
        ("GET", ["v3", "user", "webhooks", "event", "settings", "all"]) => {
            let webhooks: Vec<Value> = subscriptions
                .list
                .iter()
                .filter(|s| s.service == Service::SendGrid)
                .map(|s| sendgrid_webhook(s, true))
                .collect();
            Answer::json(200, json!({"max_allowed": 5, "webhooks": webhooks}))
        }
        ("POST", ["v3", "user", "webhooks", "event", "settings"]) => {
            if !incoming.is_json() {
                return error(400, "invalid JSON");
            }
            let (url, enabled, events) = match settings(body) {
                Ok(parts) => parts,
                Err(answer) => return answer,
            };
            let Some(url) = url else {
                return error(400, "url is required");
            };
            if let Some(existing) = subscriptions
                .list
                .iter()
                .find(|s| s.service == Service::SendGrid && s.url == url)
            {
                return Answer::json(
                    400,
                    json!({"errors": [{"id": existing.id, "message": format!("Webhook at '{url}' already exists. Please provide a unique URL."), "url": url}]}),
                );
            }
            if subscriptions
                .list
                .iter()
                .filter(|s| s.service == Service::SendGrid)
                .count()
                >= 5
            {
                return error(
                    400,
                    "You have reached the maximum number of webhooks per your current billing plan.",
                );
            }
            let id = subscriptions.id(Service::SendGrid);
            let subscription = Subscription {
                service: Service::SendGrid,
                id,
                url,
                events: events.unwrap_or_default(),
                active: enabled.unwrap_or(false),
                signer: Arc::new(Signer::generate(Service::SendGrid)),
            };
            let answer = sendgrid_webhook(&subscription, false);
            subscriptions.list.push(subscription);
            Answer::json(201, answer)
        }
        ("GET", ["v3", "user", "webhooks", "event", "settings", "signed", id]) => {
            match find(subscriptions, Service::SendGrid, id) {
                Some(s) => Answer::json(
                    200,
                    json!({"id": s.id, "public_key": s.signer.secret_data().get("verificationKey")}),
                ),
                None => error(404, "webhook not found"),
            }
        }
        ("PATCH", ["v3", "user", "webhooks", "event", "settings", "signed", id]) => {
            let Some(enabled) = body["enabled"].as_bool() else {
                return error(400, "enabled is required");
            };
            match find(subscriptions, Service::SendGrid, id) {
                Some(s) => {
                    let key = s.signer.secret_data().get("verificationKey").cloned();
                    Answer::json(
                        200,
                        json!({"id": s.id, "public_key": if enabled { key } else { None }}),
                    )
                }
                None => error(404, "webhook not found"),
            }
        }
        ("GET", ["v3", "user", "webhooks", "event", "settings", id]) => {
            match find(subscriptions, Service::SendGrid, id) {
                Some(s) => Answer::json(200, sendgrid_webhook(s, false)),
                None => error(404, "webhook not found"),
            }
        }
        ("PATCH", ["v3", "user", "webhooks", "event", "settings", id]) => {
            let (url, enabled, events) = match settings(body) {
                Ok(parts) => parts,
                Err(answer) => return answer,
            };
            match find(subscriptions, Service::SendGrid, id) {
                Some(s) => {
                    if let Some(url) = url {
                        s.url = url;
                    }
                    if let Some(enabled) = enabled {
                        s.active = enabled;
                    }
                    if let Some(events) = events {
                        s.events = events;
                    }
                    Answer::json(200, sendgrid_webhook(s, false))
                }
                None => error(404, "webhook not found"),
            }
        }
        ("DELETE", ["v3", "user", "webhooks", "event", "settings", id]) => {
            match remove(subscriptions, Service::SendGrid, id) {
                Some(_) => Answer::empty(204),
                None => error(404, "webhook not found"),
            }
        }
        _ => error(404, "not found"),
    }
}
