//! Strict local fakes of five email sending APIs (Mailtrap, Resend, Postmark,
//! Mailgun, SendGrid), served together on one loopback port: their paths do
//! not overlap. Each fake checks auth, content type, required and unknown
//! fields and value formats as the service documents them, and answers with
//! the service's own success and error bodies, so a request a fake accepts is
//! one the real API would accept.
//!
//! Tests start one per test ([`Fake::start`]), read what it received
//! ([`Fake::requests`]) and make it fail on purpose ([`Fake::fail_next`]).

mod batch;
mod check;
pub mod domains;
pub mod echo;
pub mod latency;
mod mailgun;
mod mailtrap;
pub mod manage;
mod postmark;
mod resend;
mod sendgrid;
pub mod suppressions;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{Value, json};

/// The five services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Mailtrap,
    Resend,
    Postmark,
    Mailgun,
    SendGrid,
}

impl Service {
    /// Every service, in the order the docs list them.
    pub const ALL: [Service; 5] = [
        Service::Mailtrap,
        Service::Resend,
        Service::Postmark,
        Service::Mailgun,
        Service::SendGrid,
    ];
}

/// What the fakes accept.
#[derive(Debug, Clone)]
pub struct Config {
    /// The valid API key of each service.
    pub keys: HashMap<Service, String>,
    /// A key of each service that may send but not manage webhooks (a
    /// restricted or sending key).
    pub send_only: HashMap<Service, String>,
    /// The Mailgun sending domain.
    pub mailgun_domain: String,
    /// The sending domains every service knows, verified or not.
    pub domains: Vec<domains::FakeDomain>,
    /// Postmark's account token (its domains API takes no server token).
    pub postmark_account_token: String,
    /// Addresses Postmark treats as inactive (hard bounced or suppressed).
    pub inactive: Vec<String>,
    /// The ids of the templates stored at every service (see [`TEMPLATES`]);
    /// any other id is refused as the service refuses an unknown template.
    pub templates: Vec<String>,
}

/// The templates the fakes hold by default: an alias or name (Postmark,
/// Mailgun, Resend), a numeric Postmark id, a Mailtrap UUID and a SendGrid
/// dynamic template id.
pub const TEMPLATES: &[&str] = &[
    "welcome",
    "1234567",
    "b81aabcd-1a1e-41cf-91b6-eca0254b3d96",
    "d-0123456789abcdef0123456789abcdef",
];

impl Config {
    /// One key for every service.
    pub fn with_key(key: &str) -> Self {
        let services = [
            Service::Mailtrap,
            Service::Resend,
            Service::Postmark,
            Service::Mailgun,
            Service::SendGrid,
        ];
        Self {
            keys: services.into_iter().map(|s| (s, key.to_string())).collect(),
            send_only: services
                .into_iter()
                .map(|s| (s, format!("{key}-send-only")))
                .collect(),
            mailgun_domain: "mg.example.com".into(),
            domains: vec![
                domains::FakeDomain {
                    name: "mailroom.dev".into(),
                    verified: true,
                },
                domains::FakeDomain {
                    name: "mg.example.com".into(),
                    verified: true,
                },
                domains::FakeDomain {
                    name: "pending.example.com".into(),
                    verified: false,
                },
            ],
            postmark_account_token: format!("{key}-account"),
            inactive: vec!["inactive@example.org".into()],
            templates: TEMPLATES.iter().map(|t| t.to_string()).collect(),
        }
    }
}

impl Config {
    /// Whether `key` may send through `service` (a full or a send-only key).
    pub(crate) fn sends_with(&self, service: Service, key: &str) -> bool {
        self.keys.get(&service).is_some_and(|k| k == key)
            || self.send_only.get(&service).is_some_and(|k| k == key)
            || (service == Service::Postmark && key == postmark::TEST_TOKEN)
    }
}

/// A request the fake received, and how it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The service whose endpoint was called.
    pub service: Service,
    /// GET or POST.
    pub method: String,
    /// The path.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The body: JSON as sent, or form fields as `[[name, value], ...]`.
    pub body: Value,
    /// The status the fake answered.
    pub status: u16,
    /// The message id the fake gave, when it accepted a send (the first one
    /// for a batch).
    pub id: Option<String>,
    /// How many emails the real service would deliver for this request: 1
    /// for a send, the accepted items of a batch, the personalizations
    /// (SendGrid) or recipient-variables recipients (Mailgun).
    pub delivered: usize,
    /// When it arrived.
    pub at: SystemTime,
}

impl Recorded {
    /// Whether this was an accepted send (a message the real API would deliver).
    pub fn is_accepted_send(&self) -> bool {
        self.method == "POST" && (200..300).contains(&self.status) && self.id.is_some()
    }
}

/// A failure to answer instead of the normal one.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The HTTP status: 401, 429, 500, ...
    pub status: u16,
    /// Seconds to ask the client to wait (429).
    pub retry_after: Option<u64>,
    /// How many send requests get this answer.
    pub times: usize,
    /// Wait this long before answering (to make a client time out).
    pub delay: Duration,
}

/// Answer every send with `status` until `until`, telling clients to retry
/// when the window ends (`Retry-After`, rounded up to whole seconds).
#[derive(Debug, Clone)]
pub struct Outage {
    /// The HTTP status, e.g. 429.
    pub status: u16,
    /// When the outage ends.
    pub until: SystemTime,
}

#[derive(Default)]
struct State {
    outage: Option<Outage>,
    requests: Vec<Recorded>,
    failures: Vec<Failure>,
    /// Resend idempotency keys: key → (body, id).
    idempotency: HashMap<String, (Value, String)>,
    /// The next Mailtrap batch answer lists only this many `responses`
    /// (every email is still delivered), as an answer cut short would.
    short_batch: Option<usize>,
    /// Webhook subscriptions made through the management endpoints.
    subscriptions: manage::Subscriptions,
    /// The services' own suppression lists.
    suppressions: Vec<suppressions::Suppression>,
    /// How long webhook management requests take to be answered (after
    /// they took effect), as a slow service would.
    manage_delay: Duration,
    /// How long each send request takes to be answered.
    send_latency: Option<latency::Latency>,
}

/// A running fake server.
pub struct Fake {
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    config: Arc<Config>,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Fake {
    /// Starts a fake on a free loopback port.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config).await
    }

    /// Starts a fake on `addr`.
    pub async fn start_on(addr: &str, config: Config) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let config = Arc::new(config);
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The services take requests up to 50 MB (batches); the fake judges
        // sizes itself, as they do, rather than axum's default 2 MB.
        let app = axum::Router::new()
            .fallback({
                let (config, state) = (config.clone(), state.clone());
                move |method: Method,
                      uri: axum::http::Uri,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let (config, state) = (config.clone(), state.clone());
                    async move {
                        let query = uri.query().unwrap_or_default().to_string();
                        handle(
                            &config,
                            &state,
                            method,
                            (uri.path().to_string(), query),
                            headers,
                            body,
                        )
                        .await
                    }
                }
            })
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            url,
            config,
            state,
            stop: Some(stop),
        })
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Every POST (send attempt) so far, accepted or not.
    pub fn posts(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// The accepted sends so far (what the real service would deliver).
    pub fn accepted(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_accepted_send)
            .collect()
    }

    /// What the service's webhooks echo about the message it gave `id`
    /// (the first email of the request that got it).
    pub fn echo(&self, id: &str) -> BTreeMap<String, String> {
        self.accepted()
            .iter()
            .rev()
            .find(|r| {
                r.id.as_deref()
                    .is_some_and(|own| own.trim_matches(['<', '>']) == id.trim_matches(['<', '>']))
            })
            .and_then(|r| echo::items(r).into_iter().next())
            .map(|(_, echoed)| echoed)
            .unwrap_or_default()
    }

    /// What the service's webhooks echo about the latest email accepted for
    /// `address` (one of a batch, say).
    pub fn echo_to(&self, address: &str) -> BTreeMap<String, String> {
        self.accepted()
            .iter()
            .rev()
            .flat_map(echo::items)
            .find(|(to, _)| to == address)
            .map(|(_, echoed)| echoed)
            .unwrap_or_default()
    }

    /// How many emails the accepted requests so far would deliver.
    pub fn delivered(&self) -> usize {
        self.accepted().iter().map(|r| r.delivered).sum()
    }

    /// Makes the next `failure.times` send requests fail as described.
    pub fn fail_next(&self, failure: Failure) {
        lock(&self.state).failures.push(failure);
    }

    /// Makes the next Mailtrap batch answer list only the first `answered`
    /// of its `responses`, although every email is delivered.
    pub fn answer_next_batch_short(&self, answered: usize) {
        lock(&self.state).short_batch = Some(answered);
    }

    /// Answers every send with an error until the outage ends.
    pub fn fail_until(&self, outage: Outage) {
        lock(&self.state).outage = Some(outage);
    }

    /// The webhook subscriptions made at the services so far.
    pub fn subscriptions(&self) -> Vec<manage::Subscription> {
        lock(&self.state).subscriptions.list.clone()
    }

    /// Answers each send request (single or batch, accepted or not) after
    /// a time drawn from `latency`, as a real service's answers take
    /// (`None`: at once).
    pub fn set_send_latency(&self, latency: Option<latency::Latency>) {
        lock(&self.state).send_latency = latency;
    }

    /// Answers every webhook management change (not a read) `delay` after
    /// it took effect (a slow service, or one whose answer a killed client
    /// never reads).
    pub fn delay_management(&self, delay: Duration) {
        lock(&self.state).manage_delay = delay;
    }

    /// Deletes a subscription at the service, as a person in its dashboard
    /// would; whether there was one with `id`.
    pub fn delete_subscription(&self, id: &str) -> bool {
        let mut s = lock(&self.state);
        let before = s.subscriptions.list.len();
        s.subscriptions.list.retain(|sub| sub.id != id);
        s.subscriptions.list.len() < before
    }

    /// Puts `addresses` on `service`'s own suppression list, as `kind`.
    pub fn suppress(&self, service: Service, addresses: &[String], kind: suppressions::Listed) {
        let mut s = lock(&self.state);
        for address in addresses {
            let id = uuid::Uuid::new_v4().to_string();
            s.suppressions.push(suppressions::Suppression {
                service,
                id,
                address: address.clone(),
                kind,
            });
        }
    }

    /// The addresses on `service`'s own suppression list.
    pub fn suppressed(&self, service: Service) -> Vec<String> {
        lock(&self.state)
            .suppressions
            .iter()
            .filter(|s| s.service == service)
            .map(|s| s.address.clone())
            .collect()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a service module answers: status, extra headers, body, accepted id.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub text: Option<String>,
    pub id: Option<String>,
    /// How many emails an accepted answer delivers.
    pub count: usize,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
            text: None,
            id: None,
            count: 1,
        }
    }

    pub fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            text: Some(text.to_string()),
            id: None,
            count: 1,
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            text: None,
            id: None,
            count: 1,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn accepted_id(mut self, id: String) -> Self {
        self.id = Some(id);
        self
    }

    /// An accepted answer that delivers `count` emails (a batch).
    pub fn delivering(mut self, count: usize) -> Self {
        self.count = count;
        self
    }
}

/// The parsed request a service module judges.
pub(crate) struct Incoming<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub raw: &'a [u8],
}

impl Incoming<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    pub fn is_json(&self) -> bool {
        self.content_type()
            .split(';')
            .next()
            .is_some_and(|t| t.trim() == "application/json")
    }

    /// The bearer token, if the Authorization header holds one.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

fn service_of(method: &Method, path: &str) -> Option<Service> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["api", "send" | "batch"]) | ("POST", ["api", "send" | "batch", _]) => {
            Some(Service::Mailtrap)
        }
        ("POST", ["emails"]) | ("POST", ["emails", "batch"]) => Some(Service::Resend),
        ("POST", ["email"])
        | ("POST", ["email", "withTemplate" | "batch" | "batchWithTemplates"])
        | ("GET", ["server"]) => Some(Service::Postmark),
        ("POST", ["v3", "mail", "send"]) | ("GET", ["v3", "scopes"]) => Some(Service::SendGrid),
        // The domain lookup is v4's: the current reference no longer lists
        // `GET /v3/domains/{name}`, so the fake does not serve it.
        ("POST", ["v3", _, "messages"]) | ("GET", ["v4", "domains", _]) => Some(Service::Mailgun),
        _ => None,
    }
}

async fn handle(
    config: &Config,
    state: &Mutex<State>,
    method: Method,
    (path, query): (String, String),
    headers: HeaderMap,
    raw: bytes::Bytes,
) -> Response<Body> {
    if method == Method::GET && path == "/_fake/requests" {
        let list: Vec<Value> = lock(state)
            .requests
            .iter()
            .map(|r| json!({"service": format!("{:?}", r.service), "method": r.method, "path": r.path, "status": r.status, "id": r.id, "body": r.body}))
            .collect();
        return respond(Answer::json(200, Value::from(list)));
    }
    let incoming = Incoming {
        method: &method,
        path: &path,
        headers: &headers,
        raw: &raw,
    };
    if let Some(service) = suppressions::service_of(&method, &path) {
        let body = check::body_for_record(&incoming).await;
        let answer = {
            let mut s = lock(state);
            suppressions::handle(service, config, &mut s.suppressions, &incoming, &query)
        };
        record(state, service, &method, &path, &headers, body, &answer);
        return respond(answer);
    }
    if let Some(service) = domains::service_of(&method, &path) {
        let body = check::body_for_record(&incoming).await;
        let answer = domains::handle(service, config, &incoming, &query);
        record(state, service, &method, &path, &headers, body, &answer);
        return respond(answer);
    }
    if let Some(service) = manage::service_of(&method, &path) {
        let body = check::body_for_record(&incoming).await;
        let (answer, delay) = {
            let mut s = lock(state);
            let answer = manage::handle(service, config, &mut s.subscriptions, &incoming, &query);
            (answer, s.manage_delay)
        };
        record(state, service, &method, &path, &headers, body, &answer);
        if method != Method::GET {
            tokio::time::sleep(delay).await;
        }
        return respond(answer);
    }
    let Some(service) = service_of(&method, &path) else {
        return respond(Answer::text(404, "404 page not found"));
    };
    let body = check::body_for_record(&incoming).await;
    let injected = if method == Method::POST {
        let mut s = lock(state);
        let now = SystemTime::now();
        let outage = s.outage.clone().filter(|o| o.until > now);
        if let Some(outage) = outage {
            let left = outage.until.duration_since(now).unwrap_or_default();
            let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            Some(Failure {
                status: outage.status,
                retry_after: Some(retry_after),
                times: 1,
                delay: Duration::ZERO,
            })
        } else {
            let failure = s.failures.first_mut().map(|f| {
                f.times = f.times.saturating_sub(1);
                f.clone()
            });
            s.failures.retain(|f| f.times > 0);
            failure
        }
    } else {
        None
    };
    let answer = match injected {
        Some(failure) => {
            tokio::time::sleep(failure.delay).await;
            injected_answer(service, config, &failure)
        }
        None => match service {
            Service::Mailtrap if path.starts_with("/api/batch") => {
                let answer = batch::mailtrap(config, &incoming, &body);
                match lock(state).short_batch.take() {
                    Some(answered) => batch::cut_short(answer, answered),
                    None => answer,
                }
            }
            Service::Mailtrap => mailtrap::handle(config, &incoming, &body),
            Service::Resend => {
                let answer = if path == "/emails/batch" {
                    batch::resend(config, &incoming, &body)
                } else {
                    resend::handle(config, &incoming, &body)
                };
                resend::idempotent(&mut lock(state).idempotency, &incoming, &body, answer)
            }
            Service::Postmark if path.starts_with("/email/batch") => {
                batch::postmark(config, &incoming, &body)
            }
            Service::Postmark => postmark::handle(config, &incoming, &body),
            Service::Mailgun => mailgun::handle(config, &incoming, &body),
            Service::SendGrid => sendgrid::handle(config, &incoming, &body),
        },
    };
    record(state, service, &method, &path, &headers, body, &answer);
    let latency = lock(state).send_latency;
    if let Some(latency) = latency.filter(|_| method == Method::POST) {
        tokio::time::sleep(latency.sample()).await;
    }
    respond(answer)
}

/// Keeps a request and the fake's answer for the test to read.
fn record(
    state: &Mutex<State>,
    service: Service,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Value,
    answer: &Answer,
) {
    let recorded = Recorded {
        service,
        method: method.to_string(),
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body,
        status: answer.status,
        id: answer.id.clone(),
        delivered: if answer.id.is_some() { answer.count } else { 0 },
        at: SystemTime::now(),
    };
    lock(state).requests.push(recorded);
}

/// The service's own answer to a 401/429/5xx, for injected failures.
fn injected_answer(service: Service, config: &Config, failure: &Failure) -> Answer {
    let status = failure.status;
    let mut answer = match (service, status) {
        (Service::Mailtrap, 400) => Answer::json(400, json!({"success": false, "errors": ["'to[0].email' is not a valid email address"]})),
        (Service::Resend, 422) => Answer::json(422, json!({"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."})),
        (Service::Postmark, 422) => Answer::json(422, json!({"ErrorCode": 300, "Message": "Invalid email request"})),
        (Service::Mailgun, 400) => Answer::json(400, json!({"message": "'to' parameter is not a valid address. please check documentation"})),
        (Service::SendGrid, 400) => Answer::json(400, json!({"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email", "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.personalizations.to"}]})),
        (Service::Mailtrap, 401) => Answer::json(401, json!({"success": false, "errors": ["Unauthorized"]})),
        (Service::Mailtrap, 429) => Answer::json(429, json!({"success": false, "errors": ["Rate limit exceeded"]})),
        (Service::Mailtrap, _) => Answer::json(status, json!({"success": false, "errors": ["Internal server error"]})),
        (Service::Resend, 429) => Answer::json(429, json!({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests. You can only make 2 requests per second. See rate limit response headers for more information. Or contact support to increase rate limit."}))
            .header("ratelimit-limit", "2")
            .header("ratelimit-remaining", "0"),
        (Service::Resend, _) => Answer::json(status, json!({"statusCode": status, "name": "internal_server_error", "message": "An unexpected error occurred."})),
        (Service::Postmark, 429) => Answer::json(429, json!({"ErrorCode": 429, "Message": "Rate limit exceeded."})),
        (Service::Postmark, _) => Answer::json(status, json!({"ErrorCode": 0, "Message": "Internal server error."})),
        (Service::Mailgun, 429) => {
            let wait = failure.retry_after.unwrap_or(1);
            let message = format!("Domain {} is not allowed to send: account-requests-per-sec limit exceeded, try again after {wait} seconds", config.mailgun_domain);
            Answer::json(429, json!({"message": message}))
        }
        (Service::Mailgun, _) => Answer::json(status, json!({"message": "Internal Server Error"})),
        (Service::SendGrid, 429) => {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
            // X-RateLimit-Reset is whole epoch seconds: round up so the
            // client is never told a moment earlier than the real wait.
            let reset = now + failure.retry_after.unwrap_or(1) + 1;
            Answer::json(429, json!({"errors": [{"field": null, "message": "too many requests"}]}))
                .header("x-ratelimit-limit", "600")
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", reset.to_string())
        }
        (Service::SendGrid, _) => Answer::json(status, json!({"errors": [{"field": null, "message": "internal server error"}]})),
    };
    // Mailgun says when to retry in its text and SendGrid in X-RateLimit-Reset;
    // the others send the standard header.
    if let (Some(wait), Service::Mailtrap | Service::Resend | Service::Postmark) =
        (failure.retry_after, service)
    {
        answer = answer.header("retry-after", wait.to_string());
    }
    answer
}

fn respond(answer: Answer) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in &answer.headers {
        builder = builder.header(name, value);
    }
    let body = match (answer.body, answer.text) {
        (Some(json), _) => {
            builder = builder.header("content-type", "application/json; charset=utf-8");
            Body::from(json.to_string())
        }
        (None, Some(text)) => {
            builder = builder.header("content-type", "text/plain; charset=utf-8");
            Body::from(text)
        }
        (None, None) => Body::empty(),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
