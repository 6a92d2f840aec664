//! The HTTP API transports. Each service's module is pure: it builds the
//! request exactly as the service documents it and reads its success and
//! error answers. [`ApiTransport`] runs those requests over one reqwest
//! client per provider (connections are reused) with a timeout.

mod batch;
pub mod limits;
mod mailgun;
mod mailtrap;
mod postmark;
mod resend;
mod sendgrid;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Accepted, FailureKind, SendError, Transport, Verification};
use crate::api::provider::{ApiProvider, ApiSpec};
use crate::compose::Email;
#[cfg(test)]
pub(crate) use wire::retry_after;
pub use wire::{Body, Request};

/// The request `provider` documents for sending `email` to `target`.
pub(crate) fn request(
    provider: ApiProvider,
    target: &Target,
    email: &Email,
) -> Result<Request, SendError> {
    limits::check(provider, email)?;
    match provider {
        ApiProvider::Mailtrap => mailtrap::request(target, email),
        ApiProvider::Resend => resend::request(target, email),
        ApiProvider::Postmark => postmark::request(target, email),
        ApiProvider::Mailgun => mailgun::request(target, email),
        ApiProvider::SendGrid => sendgrid::request(target, email),
    }
}

/// The batch request `provider` documents for `emails` (`None` when they
/// go one by one).
#[cfg(test)]
pub(crate) fn batch_request(
    provider: ApiProvider,
    target: &Target,
    emails: &[Email],
) -> Result<Option<Request>, SendError> {
    batch::request(provider, target, emails)
}

/// The service-specific pieces of a request, resolved from the spec.
#[derive(Debug, Clone)]
pub struct Target {
    /// The base URL, without a trailing slash.
    pub base: String,
    /// The API key.
    pub key: String,
    /// The spec's per-service options.
    pub spec: ApiSpec,
}

/// Postmark's documented test server token.
pub const POSTMARK_TEST_TOKEN: &str = "POSTMARK_API_TEST";

/// A provider that sends through an email service's HTTP API.
pub struct ApiTransport {
    provider: ApiProvider,
    target: Target,
    http: reqwest::Client,
}

impl ApiTransport {
    /// Builds the transport for `spec` with the API key from its Secret.
    pub fn new(spec: &ApiSpec, key: String) -> Result<Self, SendError> {
        let base = spec
            .endpoint
            .clone()
            .unwrap_or_else(|| default_base(spec))
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .user_agent(concat!("mailroom/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(u64::from(spec.timeout_seconds)))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| {
                SendError::new(FailureKind::InvalidRequest, format!("HTTP client: {e}"))
            })?;
        // Postmark's test mode is its test server token: requests are
        // checked and nothing is delivered.
        let key = match (spec.provider, spec.test_mode) {
            (ApiProvider::Postmark, true) => POSTMARK_TEST_TOKEN.to_string(),
            _ => key,
        };
        Ok(Self {
            provider: spec.provider,
            target: Target {
                base,
                key,
                spec: spec.clone(),
            },
            http,
        })
    }

    async fn execute(&self, request: Request) -> Result<(u16, HeaderMap, Vec<u8>), SendError> {
        let mut builder = self.http.request(request.method.clone(), &request.url);
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                SendError::new(FailureKind::InvalidRequest, format!("header {name}: {e}"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                SendError::new(
                    FailureKind::InvalidRequest,
                    format!("header {name} has characters HTTP cannot carry"),
                )
            })?;
            if name == reqwest::header::AUTHORIZATION || name.as_str().contains("token") {
                value.set_sensitive(true);
            }
            headers.insert(name, value);
        }
        builder = builder.headers(headers);
        if let Some((user, password)) = &request.basic_auth {
            builder = builder.basic_auth(user, Some(password));
        }
        builder = match request.body {
            Body::None => builder,
            Body::Json(value) => builder.json(&value),
            Body::Form(fields, files) => {
                let mut form = reqwest::multipart::Form::new();
                for (name, value) in fields {
                    form = form.text(name, value);
                }
                for file in files {
                    let part = reqwest::multipart::Part::bytes(file.content)
                        .file_name(file.filename)
                        .mime_str(&file.content_type)
                        .map_err(|e| {
                            SendError::new(
                                FailureKind::InvalidRequest,
                                format!("attachment content type: {e}"),
                            )
                        })?;
                    form = form.part(file.field, part);
                }
                builder.multipart(form)
            }
        };
        let response = builder
            .send()
            .await
            .map_err(|e| network_error(self.provider, &e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| network_error(self.provider, &e))?;
        Ok((status, headers, body.to_vec()))
    }
}

pub(crate) fn default_base(spec: &ApiSpec) -> String {
    use crate::api::provider::{MailgunRegion, MailtrapStream, SendGridRegion};
    match spec.provider {
        ApiProvider::Mailtrap => {
            let options = spec.mailtrap.clone().unwrap_or_default();
            match (options.sandbox_inbox_id, options.stream) {
                (Some(_), _) => "https://sandbox.api.mailtrap.io",
                (None, MailtrapStream::Transactional) => "https://send.api.mailtrap.io",
                (None, MailtrapStream::Bulk) => "https://bulk.api.mailtrap.io",
            }
        }
        ApiProvider::Resend => "https://api.resend.com",
        ApiProvider::Postmark => "https://api.postmarkapp.com",
        ApiProvider::Mailgun => match spec.mailgun.as_ref().map(|m| m.region) {
            Some(MailgunRegion::EU) => "https://api.eu.mailgun.net",
            _ => "https://api.mailgun.net",
        },
        ApiProvider::SendGrid => match spec.sendgrid.as_ref().map(|s| s.region) {
            Some(SendGridRegion::EU) => "https://api.eu.sendgrid.com",
            _ => "https://api.sendgrid.com",
        },
    }
    .to_string()
}

fn network_error(provider: ApiProvider, error: &reqwest::Error) -> SendError {
    // A connect failure means the request never left; any other failure
    // (a timeout, a connection lost mid-answer) may come after the service
    // took the message.
    let signal = if error.is_connect() {
        "HTTP connection failure before the request was sent"
    } else {
        "HTTP timeout waiting for the answer"
    };
    let rule = super::classify::signal(signal);
    // reqwest's message never includes request headers, so no key leaks here.
    let mut e = SendError::new(
        rule.kind,
        format!("{}: {}: {error}", provider.name(), rule.meaning),
    );
    e.maybe_delivered = rule.maybe_delivered;
    e
}

#[async_trait]
impl Transport for ApiTransport {
    fn name(&self) -> &'static str {
        self.provider.name()
    }

    fn idempotent(&self) -> bool {
        self.provider == ApiProvider::Resend
    }

    fn stores_templates(&self) -> bool {
        true
    }

    fn batch_size(&self) -> usize {
        batch::size(self.provider)
    }

    fn batch_bytes(&self) -> Option<usize> {
        limits::of(self.provider).batch_bytes
    }

    async fn send_batch(&self, emails: &[Email]) -> super::BatchOutcome {
        let request = match batch::request(self.provider, &self.target, emails) {
            Ok(Some(request)) => request,
            Ok(None) => return super::one_by_one(self, emails).await,
            Err(e) => return super::BatchOutcome::whole(emails.len(), e),
        };
        let (status, headers, body) = match self.execute(request).await {
            Ok(answer) => answer,
            Err(e) => return super::BatchOutcome::whole(emails.len(), e),
        };
        if !(200..300).contains(&status) {
            let error = self.error(status, &headers, &body);
            return super::BatchOutcome::whole(emails.len(), error);
        }
        batch::outcome(self.provider, status, &headers, &body, emails.len())
    }

    async fn verify(&self) -> Result<Verification, SendError> {
        let request = match self.provider {
            // The test token has no server to read: nothing to verify.
            ApiProvider::Postmark if self.target.spec.test_mode => {
                return Ok(Verification::Unverifiable);
            }
            ApiProvider::Postmark => postmark::verify(&self.target),
            ApiProvider::Mailgun => mailgun::verify(&self.target),
            ApiProvider::SendGrid => sendgrid::verify(&self.target),
            ApiProvider::Mailtrap | ApiProvider::Resend => return Ok(Verification::Unverifiable),
        };
        let (status, headers, body) = self.execute(request).await?;
        if (200..300).contains(&status) {
            if self.provider == ApiProvider::SendGrid {
                sendgrid::check_scopes(&body)?;
            }
            return Ok(Verification::Verified);
        }
        Err(self.error(status, &headers, &body))
    }

    async fn send(&self, email: &Email) -> Result<Accepted, SendError> {
        let request = request(self.provider, &self.target, email)?;
        let (status, headers, body) = self.execute(request).await?;
        if !(200..300).contains(&status) {
            return Err(self.error(status, &headers, &body));
        }
        match self.provider {
            ApiProvider::Mailtrap => mailtrap::accepted(status, &body),
            ApiProvider::Resend => resend::accepted(status, &body),
            ApiProvider::Postmark => postmark::accepted(status, &body),
            ApiProvider::Mailgun => mailgun::accepted(status, &body),
            ApiProvider::SendGrid => sendgrid::accepted(status, &headers),
        }
    }
}

impl ApiTransport {
    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> SendError {
        let detail = match self.provider {
            ApiProvider::Mailtrap => mailtrap::error(body),
            ApiProvider::Resend => resend::error(body),
            ApiProvider::Postmark => postmark::error(body),
            ApiProvider::Mailgun => mailgun::error(body),
            ApiProvider::SendGrid => sendgrid::error(body),
        };
        wire::classify(self.provider, status, headers, detail)
    }
}
