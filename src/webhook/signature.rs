//! Checks that a webhook request came from the service, each by its own
//! documented scheme: Svix HMAC headers (Resend), an ECDSA P-256 signature
//! over timestamp and body (SendGrid), an HMAC of timestamp and token inside
//! the body (Mailgun), an HMAC of the body (Mailtrap), basic auth (Postmark,
//! which signs nothing). Comparisons are constant-time; signed timestamps
//! outside the tolerance are refused as replays.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use ring::hmac;
use subtle::ConstantTimeEq;

/// A service's webhook key, ready to check requests with.
pub enum WebhookKey {
    /// Resend (Svix): the bytes after `whsec_`, base64-decoded.
    Svix(hmac::Key),
    /// Mailtrap: the signing secret.
    Mailtrap(hmac::Key),
    /// Mailgun: the HTTP webhook signing key.
    Mailgun(hmac::Key),
    /// SendGrid: the signed event webhook's public key.
    SendGrid(Box<p256::ecdsa::VerifyingKey>),
    /// Postmark: the basic auth credentials of the webhook URL.
    Postmark {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

/// Why a webhook key from a Secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The Secret value is not in the form the service gives it.
    #[error("{key} is not {expected}")]
    Malformed {
        /// The Secret key.
        key: &'static str,
        /// The form expected.
        expected: &'static str,
    },
}

impl WebhookKey {
    /// Resend's `whsec_...` signing secret.
    pub fn svix(secret: &str) -> Result<Self, KeyError> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let bytes = STANDARD.decode(encoded).map_err(|_| KeyError::Malformed {
            key: "signingSecret",
            expected: "a whsec_ secret (base64 after the prefix)",
        })?;
        Ok(Self::Svix(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// Mailtrap's signing secret.
    pub fn mailtrap(secret: &str) -> Self {
        Self::Mailtrap(hmac::Key::new(hmac::HMAC_SHA256, secret.trim().as_bytes()))
    }

    /// Mailgun's HTTP webhook signing key.
    pub fn mailgun(signing_key: &str) -> Self {
        Self::Mailgun(hmac::Key::new(
            hmac::HMAC_SHA256,
            signing_key.trim().as_bytes(),
        ))
    }

    /// SendGrid's verification key: base64 DER SubjectPublicKeyInfo, as the
    /// settings page shows it, or the same in PEM.
    pub fn sendgrid(public_key: &str) -> Result<Self, KeyError> {
        let malformed = KeyError::Malformed {
            key: "verificationKey",
            expected: "an ECDSA P-256 public key (base64 DER or PEM)",
        };
        let encoded: String = public_key
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let der = STANDARD.decode(encoded).map_err(|_| KeyError::Malformed {
            key: "verificationKey",
            expected: "an ECDSA P-256 public key (base64 DER or PEM)",
        })?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(&der).map_err(|_| malformed)?;
        Ok(Self::SendGrid(Box::new(key)))
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// A header or body field the scheme needs is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A signature or timestamp is not in the documented form.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature does not match the body and key.
    #[error("the signature does not match")]
    Mismatch,
    /// The signed timestamp is too old (or too far ahead): a replay.
    #[error("the signed timestamp is {age} s away from now, outside the {tolerance} s tolerance")]
    Stale {
        /// Seconds between the timestamp and now.
        age: i64,
        /// The tolerance in seconds.
        tolerance: u32,
    },
    /// Postmark's basic auth credentials are absent or wrong.
    #[error("wrong or missing basic auth credentials")]
    Credentials,
}

impl Refused {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Missing(_) => "Missing",
            Refused::Malformed(_) => "Malformed",
            Refused::Mismatch => "Mismatch",
            Refused::Stale { .. } => "Stale",
            Refused::Credentials => "Credentials",
        }
    }
}

/// Checks one request: its headers and raw body, at unix time `now`.
pub fn verify(
    key: &WebhookKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u32,
) -> Result<(), Refused> {
    match key {
        WebhookKey::Svix(key) => svix(key, headers, body, now, tolerance),
        WebhookKey::Mailtrap(key) => mailtrap(key, headers, body),
        WebhookKey::Mailgun(key) => mailgun(key, body, now, tolerance),
        WebhookKey::SendGrid(key) => sendgrid(key, headers, body, now, tolerance),
        WebhookKey::Postmark { username, password } => postmark(username, password, headers),
    }
}

fn header<'a>(headers: &'a HeaderMap, names: &[&'static str]) -> Result<&'a str, Refused> {
    let first = names[0];
    names
        .iter()
        .find_map(|name| headers.get(*name))
        .ok_or(Refused::Missing(first))?
        .to_str()
        .map_err(|_| Refused::Malformed(first))
}

fn fresh(timestamp: &str, what: &'static str, now: i64, tolerance: u32) -> Result<(), Refused> {
    let seconds: f64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::Malformed(what))?;
    if !seconds.is_finite() {
        return Err(Refused::Malformed(what));
    }
    let age = now - seconds as i64;
    if age.abs() > i64::from(tolerance) {
        return Err(Refused::Stale { age, tolerance });
    }
    Ok(())
}

/// Svix: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, any of a
/// space-separated list. Svix also sends the same as `webhook-*` headers.
fn svix(
    key: &hmac::Key,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u32,
) -> Result<(), Refused> {
    let id = header(headers, &["svix-id", "webhook-id"])?;
    let timestamp = header(headers, &["svix-timestamp", "webhook-timestamp"])?;
    let signatures = header(headers, &["svix-signature", "webhook-signature"])?;
    fresh(timestamp, "svix-timestamp", now, tolerance)?;
    let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let matches = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|tag| hmac::verify(key, &signed, &tag).is_ok());
    if matches {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

/// Mailtrap: `Mailtrap-Signature` = lowercase hex HMAC-SHA256 of the body.
fn mailtrap(key: &hmac::Key, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
    let signature = header(headers, &["mailtrap-signature"])?;
    let tag =
        hex::decode(signature.trim()).map_err(|_| Refused::Malformed("Mailtrap-Signature"))?;
    hmac::verify(key, body, &tag).map_err(|_| Refused::Mismatch)
}

#[derive(serde::Deserialize)]
struct MailgunBody {
    signature: Option<MailgunSignature>,
}

#[derive(serde::Deserialize)]
struct MailgunSignature {
    timestamp: String,
    token: String,
    signature: String,
}

/// Mailgun: `signature.signature` = hex HMAC-SHA256 of timestamp + token.
fn mailgun(key: &hmac::Key, body: &[u8], now: i64, tolerance: u32) -> Result<(), Refused> {
    let parsed: MailgunBody =
        serde_json::from_slice(body).map_err(|_| Refused::Malformed("body (JSON)"))?;
    let signature = parsed.signature.ok_or(Refused::Missing("signature"))?;
    fresh(&signature.timestamp, "signature.timestamp", now, tolerance)?;
    let tag = hex::decode(signature.signature.trim())
        .map_err(|_| Refused::Malformed("signature.signature"))?;
    let signed = format!("{}{}", signature.timestamp, signature.token);
    hmac::verify(key, signed.as_bytes(), &tag).map_err(|_| Refused::Mismatch)
}

/// SendGrid: base64 DER ECDSA P-256/SHA-256 signature over timestamp + body.
fn sendgrid(
    key: &p256::ecdsa::VerifyingKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u32,
) -> Result<(), Refused> {
    const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
    const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";
    let signature = header(headers, &[SIGNATURE])?;
    let timestamp = header(headers, &[TIMESTAMP])?;
    fresh(
        timestamp,
        "X-Twilio-Email-Event-Webhook-Timestamp",
        now,
        tolerance,
    )?;
    let der = STANDARD
        .decode(signature.trim())
        .map_err(|_| Refused::Malformed("X-Twilio-Email-Event-Webhook-Signature"))?;
    let signature = p256::ecdsa::Signature::from_der(&der)
        .map_err(|_| Refused::Malformed("X-Twilio-Email-Event-Webhook-Signature"))?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.verify(&signed, &signature)
        .map_err(|_| Refused::Mismatch)
}

/// Postmark: `Authorization: Basic base64(username:password)`.
fn postmark(username: &str, password: &str, headers: &HeaderMap) -> Result<(), Refused> {
    let value = header(headers, &["authorization"]).map_err(|_| Refused::Credentials)?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or(Refused::Credentials)?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refused::Credentials)?;
    let expected = format!("{username}:{password}");
    let same_length = decoded.len() == expected.len();
    // Compare over the expected length either way, so timing tells nothing.
    let padded: Vec<u8> = decoded
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(expected.len())
        .collect();
    if bool::from(padded.ct_eq(expected.as_bytes())) && same_length {
        Ok(())
    } else {
        Err(Refused::Credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
        hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg).as_ref())
    }

    /// The example of Svix's manual-verification guide, with `signatures`
    /// as the svix-signature header.
    fn svix_example(signatures: &str) -> (WebhookKey, HeaderMap) {
        let key = WebhookKey::svix("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let h = headers(&[
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            ("svix-signature", signatures),
        ]);
        (key, h)
    }

    const SVIX_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SVIX_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn svix_documented_example_verifies() {
        let (key, h) = svix_example(SVIX_SIGNATURE);
        assert_eq!(verify(&key, &h, SVIX_BODY, 1614265330, 300), Ok(()));
        assert_eq!(
            verify(&key, &h, br#"{"test": 2432232315}"#, 1614265330, 300),
            Err(Refused::Mismatch)
        );
        assert!(matches!(
            verify(&key, &h, SVIX_BODY, 1614265330 + 301, 300),
            Err(Refused::Stale { age: 301, .. })
        ));
    }

    #[test]
    fn svix_accepts_any_listed_signature_and_needs_all_headers() {
        let (key, h) = svix_example(&format!("v1,bm9wZQ== {SVIX_SIGNATURE}"));
        assert_eq!(verify(&key, &h, SVIX_BODY, 1614265330, 300), Ok(()));
        let missing = headers(&[("svix-id", "x"), ("svix-timestamp", "1614265330")]);
        assert_eq!(
            verify(&key, &missing, SVIX_BODY, 1614265330, 300),
            Err(Refused::Missing("svix-signature"))
        );
    }

    #[test]
    fn mailtrap_is_hex_hmac_of_the_body() {
        let key = WebhookKey::mailtrap("0123456789abcdef0123456789abcdef");
        let body = br#"{"events":[]}"#;
        let good = hmac_hex(b"0123456789abcdef0123456789abcdef", body);
        let h = headers(&[("mailtrap-signature", &good)]);
        assert_eq!(verify(&key, &h, body, 0, 300), Ok(()));
        assert_eq!(
            verify(&key, &h, br#"{"events":[{}]}"#, 0, 300),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(&key, &HeaderMap::new(), body, 0, 300),
            Err(Refused::Missing("mailtrap-signature"))
        );
    }

    #[test]
    fn mailgun_signs_timestamp_and_token_in_the_body() {
        let key = WebhookKey::mailgun("key-signing");
        let signature = hmac_hex(b"key-signing", b"1529006854abcdef");
        let body = format!(
            r#"{{"signature":{{"timestamp":"1529006854","token":"abcdef","signature":"{signature}"}},"event-data":{{}}}}"#
        );
        assert_eq!(
            verify(&key, &HeaderMap::new(), body.as_bytes(), 1529006854, 300),
            Ok(())
        );
        let tampered = body.replace("abcdef", "abcdeg");
        assert_eq!(
            verify(
                &key,
                &HeaderMap::new(),
                tampered.as_bytes(),
                1529006854,
                300
            ),
            Err(Refused::Mismatch)
        );
        assert!(matches!(
            verify(
                &key,
                &HeaderMap::new(),
                body.as_bytes(),
                1529006854 + 3600,
                300
            ),
            Err(Refused::Stale { .. })
        ));
    }

    /// SendGrid's public test vector (sendgrid-nodejs eventwebhook spec).
    #[test]
    fn sendgrid_public_test_vector_verifies() {
        let key = WebhookKey::sendgrid("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==").unwrap();
        let body = "{\"category\":\"example_payload\",\"event\":\"test_event\",\"message_id\":\"message_id\"}";
        let h = headers(&[
            (
                "x-twilio-email-event-webhook-signature",
                "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=",
            ),
            ("x-twilio-email-event-webhook-timestamp", "1588788367"),
        ]);
        assert_eq!(verify(&key, &h, body.as_bytes(), 1588788367, 300), Ok(()));
        assert_eq!(
            verify(&key, &h, b"payload", 1588788367, 300),
            Err(Refused::Mismatch)
        );
        assert!(matches!(
            verify(&key, &h, body.as_bytes(), 1588788367 + 600, 300),
            Err(Refused::Stale { .. })
        ));
        let other = WebhookKey::sendgrid("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==").unwrap();
        assert_eq!(
            verify(&other, &h, body.as_bytes(), 1588788367, 300),
            Err(Refused::Mismatch)
        );
    }

    #[test]
    fn postmark_needs_the_basic_auth_credentials() {
        let key = WebhookKey::Postmark {
            username: "postmark".into(),
            password: "s3cret".into(),
        };
        let good = format!("Basic {}", STANDARD.encode("postmark:s3cret"));
        let bad = format!("Basic {}", STANDARD.encode("postmark:s3cre"));
        assert_eq!(
            verify(&key, &headers(&[("authorization", &good)]), b"{}", 0, 300),
            Ok(())
        );
        assert_eq!(
            verify(&key, &headers(&[("authorization", &bad)]), b"{}", 0, 300),
            Err(Refused::Credentials)
        );
        assert_eq!(
            verify(&key, &HeaderMap::new(), b"{}", 0, 300),
            Err(Refused::Credentials)
        );
    }
}
