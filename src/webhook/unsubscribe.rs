//! The hosted one-click unsubscribe endpoint, on the receiver's port:
//! `POST /unsubscribe/{namespace}/{list}/{token}` with the RFC 8058 body
//! `List-Unsubscribe=One-Click` (form-urlencoded or multipart) records the
//! unsubscribe and answers 200 with no page; `GET` shows a page with a
//! button that POSTs (mail scanners follow links: a GET never
//! unsubscribes). A token that does not open costs no apiserver call;
//! valid ones are paced per namespace; the body is bounded by the route.
//! Nothing about the address is shown or logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{debug, warn};

use super::Receiver;
use crate::delivery::suppress::{self, Unsubscribed};
use crate::delivery::unsubscribe::keys::KeysError;
use crate::delivery::unsubscribe::token::MAX_TOKEN_CHARS;

/// The largest unsubscribe request body taken (413 past it).
pub const MAX_BODY_BYTES: usize = 4096;
/// Namespaces whose pace is remembered; past it the idle ones are dropped.
const MAX_PACED_NAMESPACES: usize = 4096;

/// What the page's own form sends beside the one-click field, so its POST
/// is answered with a page a person reads.
const FROM_PAGE: &str = "from-page";

/// The path's parts, as the route gives them.
type Parts = (String, String, String);

/// Shows the confirmation page for a link that opens.
pub(super) async fn page(
    State(receiver): State<Arc<Receiver>>,
    Path((namespace, list, token)): Path<Parts>,
) -> Response {
    match open(&receiver, &namespace, &list, &token).await {
        Ok(_) => html(StatusCode::OK, CONFIRM_PAGE),
        Err(refusal) => refusal.page(),
    }
}

/// Records a one-click unsubscribe.
pub(super) async fn post(
    State(receiver): State<Arc<Receiver>>,
    Path((namespace, list, token)): Path<Parts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metrics = &receiver.telemetry.metrics;
    let fields = match one_click(&headers, body).await {
        Ok(fields) => fields,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let address = match open(&receiver, &namespace, &list, &token).await {
        Ok(address) => address,
        Err(refusal) => {
            if matches!(refusal, Refusal::NotValid) {
                metrics.count_unsubscribe("link", "invalid");
            }
            return refusal.plain();
        }
    };
    if !receiver.unsubscribe_pace.take(&namespace, Instant::now()) {
        metrics.count_unsubscribe("link", "limited");
        let mut answer = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many unsubscribes: try again",
        )
            .into_response();
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return answer;
    }
    let now = Time(jiff::Timestamp::now());
    let how = "the one-click unsubscribe link";
    match suppress::unsubscribe(&receiver.client, &namespace, &list, &address, how, now).await {
        Ok(done) => {
            let outcome = match done {
                Unsubscribed::Recorded => "recorded",
                Unsubscribed::Already => "already",
                Unsubscribed::Refused => "refused",
            };
            metrics.count_unsubscribe("link", outcome);
            if fields.from_page {
                html(StatusCode::OK, DONE_PAGE)
            } else {
                StatusCode::OK.into_response()
            }
        }
        Err(e) => {
            metrics.count_unsubscribe("link", "failed");
            warn!(namespace, list, error = %e, "recording an unsubscribe failed");
            (StatusCode::SERVICE_UNAVAILABLE, "not recorded: try again").into_response()
        }
    }
}

/// Why a link is not taken.
enum Refusal {
    /// It does not open (forged, altered, another namespace's or list's,
    /// a rotated-out key) or names a namespace this receiver does not serve.
    NotValid,
    /// The keys cannot be read now.
    Unavailable,
}

impl Refusal {
    fn plain(&self) -> Response {
        match self {
            Refusal::NotValid => (StatusCode::NOT_FOUND, "not a valid unsubscribe link"),
            Refusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "try again later"),
        }
        .into_response()
    }

    fn page(&self) -> Response {
        match self {
            Refusal::NotValid => html(StatusCode::NOT_FOUND, INVALID_PAGE),
            Refusal::Unavailable => html(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_PAGE),
        }
    }
}

/// The address `token` names on `list` in `namespace`, if the link is one
/// this receiver takes.
async fn open(
    receiver: &Receiver,
    namespace: &str,
    list: &str,
    token: &str,
) -> Result<String, Refusal> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label(namespace) || !label(list) || token.len() > MAX_TOKEN_CHARS {
        return Err(Refusal::NotValid);
    }
    if receiver
        .settings
        .namespace
        .as_ref()
        .is_some_and(|served| served != namespace)
    {
        return Err(Refusal::NotValid);
    }
    let keys = match receiver.unsubscribe_keys.for_opening().await {
        Ok(keys) => keys,
        // No keys: no token was ever made.
        Err(KeysError::Unset | KeysError::Missing(_)) => return Err(Refusal::NotValid),
        Err(e) => {
            warn!(error = %e, "unsubscribe keys unavailable");
            return Err(Refusal::Unavailable);
        }
    };
    keys.open(namespace, list, token).map_err(|refused| {
        debug!(namespace, list, %refused, "unsubscribe link refused");
        Refusal::NotValid
    })
}

/// What the body of a one-click POST said.
struct OneClick {
    /// Sent by the confirmation page's own form.
    from_page: bool,
}

/// Checks the body is RFC 8058's `List-Unsubscribe=One-Click`, as
/// `application/x-www-form-urlencoded` or `multipart/form-data`.
async fn one_click(headers: &HeaderMap, body: Bytes) -> Result<OneClick, &'static str> {
    const WANTED: &str = "the body must be List-Unsubscribe=One-Click (RFC 8058), form-urlencoded or multipart/form-data";
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let fields: Vec<(String, String)> = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let boundary = multer::parse_boundary(content_type).map_err(|_| WANTED)?;
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut fields = Vec::new();
        // The body is bounded, and so are its fields.
        while let Some(field) = multipart.next_field().await.map_err(|_| WANTED)? {
            let name = field.name().unwrap_or_default().to_string();
            let value = field.text().await.map_err(|_| WANTED)?;
            fields.push((name, value));
        }
        fields
    } else {
        form_urlencoded::parse(&body).into_owned().collect()
    };
    let one_click = fields
        .iter()
        .any(|(name, value)| name == "List-Unsubscribe" && value == "One-Click");
    if !one_click {
        return Err(WANTED);
    }
    Ok(OneClick {
        from_page: fields.iter().any(|(name, _)| name == FROM_PAGE),
    })
}

/// Valid unsubscribes each namespace may record: `rate` a second, `burst`
/// at once, so no one namespace's flood slows another's.
pub struct Pace {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Pace {
    /// `rate` a second, up to `burst` at once.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one from `namespace`'s bucket, if it has one.
    pub fn take(&self, namespace: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_PACED_NAMESPACES && !buckets.contains_key(namespace) {
            // A full bucket is the same as none.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets
            .entry(namespace.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn html(code: StatusCode, body: &'static str) -> Response {
    let mut answer = (code, body).into_response();
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    answer
}

const CONFIRM_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Unsubscribe</title><style>body{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}</style></head>
<body><h1>Unsubscribe</h1><p>Stop receiving mail from this list?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><input type="hidden" name="from-page" value="1"><button type="submit">Unsubscribe</button></form>
</body></html>
"#;

const DONE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Unsubscribed</title><style>body{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}</style></head>
<body><h1>Unsubscribed</h1><p>You will receive no more mail from this list.</p></body></html>
"#;

const INVALID_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not a valid link</title></head>
<body><h1>Not a valid unsubscribe link</h1><p>Use the link in the mail you received, as it is.</p></body></html>
"#;

const UNAVAILABLE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Try again later</title></head>
<body><h1>Try again later</h1><p>Unsubscribing is not possible right now.</p></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_namespace_has_its_own_pace() {
        let pace = Pace::new(10, 2);
        let start = Instant::now();
        assert!(pace.take("a", start) && pace.take("a", start));
        assert!(!pace.take("a", start), "over the burst");
        assert!(pace.take("b", start), "another namespace is not slowed");
        assert!(
            pace.take("a", start + Duration::from_millis(100)),
            "refilled"
        );
    }

    #[tokio::test]
    async fn the_body_must_be_one_click_in_either_form_encoding() {
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let ok = one_click(&form, Bytes::from_static(b"List-Unsubscribe=One-Click")).await;
        assert!(ok.is_ok_and(|f| !f.from_page));
        assert!(
            one_click(&form, Bytes::from_static(b"List-Unsubscribe=Other"))
                .await
                .is_err()
        );
        assert!(one_click(&form, Bytes::new()).await.is_err());
        let mut multipart = HeaderMap::new();
        multipart.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
        assert!(one_click(&multipart, Bytes::from(body)).await.is_ok());
        let broken =
            "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click";
        assert!(one_click(&multipart, Bytes::from(broken)).await.is_err());
    }

    #[test]
    fn the_pages_say_nothing_of_the_address_and_post_to_themselves() {
        assert!(CONFIRM_PAGE.contains(r#"<form method="post">"#));
        assert!(CONFIRM_PAGE.contains(r#"name="List-Unsubscribe" value="One-Click""#));
        for page in [CONFIRM_PAGE, DONE_PAGE, INVALID_PAGE, UNAVAILABLE_PAGE] {
            assert!(!page.contains('@'), "{page}");
        }
    }
}
