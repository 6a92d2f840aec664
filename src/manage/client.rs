//! One HTTP client for a service's management API: its base URL (the
//! provider's endpoint override, else the service's own; Mailtrap's account
//! API lives on `mailtrap.io`, not on its sending hosts), its auth, a
//! bounded answer, and errors sorted by what they mean for the caller.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::api::provider::{ApiProvider, ApiSpec};

/// The largest management answer read (a list of a few webhooks is small).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The largest answer of a list call that may be long (Postmark's
/// suppression dump, a page of 1,000 addresses).
const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;

/// Why a management call did not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManageError {
    /// The key may not do this (401/403): a sending-only or restricted key.
    #[error("the API key may not manage {what} ({status}: {message})")]
    Denied {
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// What the service said.
        message: String,
    },
    /// The service refused the request (another 4xx).
    #[error("{service} refused {what} ({status}: {message})")]
    Refused {
        /// The service.
        service: &'static str,
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// What the service said.
        message: String,
    },
    /// The service offers no such thing for this provider's settings.
    #[error("{0}")]
    Unsupported(String),
    /// The service could not be reached or failed (5xx, timeout): try again.
    #[error("{service} unavailable for {what}: {message}")]
    Unavailable {
        /// The service.
        service: &'static str,
        /// What was asked.
        what: String,
        /// What went wrong.
        message: String,
    },
}

/// A request body.
pub enum Body {
    /// No body.
    None,
    /// JSON.
    Json(Value),
    /// `application/x-www-form-urlencoded` fields (repeatable names).
    Form(Vec<(String, String)>),
}

/// A client of one provider's management API.
pub struct Client {
    service: ApiProvider,
    base: String,
    key: String,
    /// Postmark's account token instead of the server token.
    account: bool,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "manage::Client({}, {})", self.service.name(), self.base)
    }
}

/// The base URL of `spec`'s management API.
pub fn base_of(spec: &ApiSpec) -> String {
    let base = match (&spec.endpoint, spec.provider) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, ApiProvider::Mailtrap) => "https://mailtrap.io".to_string(),
        (None, _) => crate::transport::api::default_base(spec),
    };
    base.trim_end_matches('/').to_string()
}

impl Client {
    /// A client for `spec` with its API key.
    pub fn new(spec: &ApiSpec, key: String) -> Result<Self, ManageError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("mailroom/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(u64::from(spec.timeout_seconds.max(5))))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ManageError::Unavailable {
                service: spec.provider.name(),
                what: "a client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            service: spec.provider,
            base: base_of(spec),
            key,
            account: false,
            http,
        })
    }

    /// A Postmark client with the account token (its domains API takes no
    /// server token).
    pub fn postmark_account(spec: &ApiSpec, token: String) -> Result<Self, ManageError> {
        Ok(Self {
            account: true,
            ..Self::new(spec, token)?
        })
    }

    /// The service.
    pub fn service(&self) -> ApiProvider {
        self.service
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method path` with `body`; `what` names the call in errors.
    /// The answer's JSON (`Null` for an empty answer) on a 2xx.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body,
        what: &str,
    ) -> Result<Value, ManageError> {
        self.call_bounded(method, path, body, what, MAX_ANSWER_BYTES)
            .await
    }

    /// Like [`Self::call`], for a list whose answer may be large (up to 32 MiB).
    pub async fn call_large(
        &self,
        method: Method,
        path: &str,
        body: Body,
        what: &str,
    ) -> Result<Value, ManageError> {
        self.call_bounded(method, path, body, what, MAX_LIST_BYTES)
            .await
    }

    async fn call_bounded(
        &self,
        method: Method,
        path: &str,
        body: Body,
        what: &str,
        limit: usize,
    ) -> Result<Value, ManageError> {
        let service = self.service.name();
        let unavailable = |message: String| ManageError::Unavailable {
            service,
            what: what.to_string(),
            message,
        };
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        request = match self.service {
            ApiProvider::Resend | ApiProvider::SendGrid => request.bearer_auth(&self.key),
            ApiProvider::Mailtrap => request.header("Api-Token", &self.key),
            ApiProvider::Postmark if self.account => request
                .header("X-Postmark-Account-Token", &self.key)
                .header("Accept", "application/json"),
            ApiProvider::Postmark => request
                .header("X-Postmark-Server-Token", &self.key)
                .header("Accept", "application/json"),
            ApiProvider::Mailgun => request.basic_auth("api", Some(&self.key)),
        };
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Form(fields) => {
                let encoded = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&fields)
                    .finish();
                request
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(encoded)
            }
        };
        let mut answer = request
            .send()
            .await
            .map_err(|e| unavailable(without_url(&e)))?;
        let status = answer.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| unavailable(without_url(&e)))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(unavailable(format!("an answer over {limit} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let message = message_of(&json, bytes.len());
        Err(match status {
            401 | 403 => ManageError::Denied {
                what: what.to_string(),
                status,
                message,
            },
            400..=499 => ManageError::Refused {
                service,
                what: what.to_string(),
                status,
                message,
            },
            _ => unavailable(format!("{status}: {message}")),
        })
    }
}

/// A network error without the URL (which may carry a path the user did
/// not write).
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "could not connect".into()
    } else {
        "the request failed".into()
    }
}

/// The service's own error text, in each service's documented shape, cut
/// at 300 characters with control characters removed; else the size.
fn message_of(json: &Value, size: usize) -> String {
    let found = [
        &json["message"],
        &json["Message"],
        &json["error"],
        &json["Reason"],
        &json["errors"][0]["message"],
        &json["errors"][0],
        &json["errors"],
    ]
    .into_iter()
    .find_map(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(_) => Some(v.to_string()),
        _ => None,
    });
    match found {
        Some(text) => text.chars().filter(|c| !c.is_control()).take(300).collect(),
        None => format!("an answer of {size} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_services_error_text_is_found_and_bounded() {
        assert_eq!(
            message_of(&json!({"message": "Invalid private key"}), 0),
            "Invalid private key"
        );
        assert_eq!(
            message_of(&json!({"Message": "The Url is not valid."}), 0),
            "The Url is not valid."
        );
        assert_eq!(
            message_of(&json!({"errors": [{"message": "access forbidden"}]}), 0),
            "access forbidden"
        );
        assert_eq!(
            message_of(&json!({"errors": "Access forbidden"}), 0),
            "Access forbidden"
        );
        assert_eq!(
            message_of(&json!({"error": "Incorrect API token"}), 0),
            "Incorrect API token"
        );
        assert_eq!(message_of(&Value::Null, 12), "an answer of 12 bytes");
        let long = "x\n".repeat(500);
        assert_eq!(message_of(&json!({"message": long}), 0).len(), 300);
    }

    #[test]
    fn mailtraps_account_api_is_not_its_sending_host() {
        let spec: ApiSpec =
            serde_json::from_value(json!({"provider": "Mailtrap", "secretRef": {"name": "k"}}))
                .expect("spec");
        assert_eq!(base_of(&spec), "https://mailtrap.io");
        let spec: ApiSpec = serde_json::from_value(json!({"provider": "Resend", "secretRef": {"name": "k"}, "endpoint": "http://127.0.0.1:1/"})).expect("spec");
        assert_eq!(base_of(&spec), "http://127.0.0.1:1");
    }
}
