//! The services' side of delivery webhooks: builds the requests each service
//! posts (its documented payload format, headers and signature), so tests
//! can post what the real service would. Signing is written here from the
//! services' documentation, independently of mailroom's verification.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

use crate::Service;

/// What happened to a message, in terms every service can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happened {
    /// The recipient's server took it.
    Delivered,
    /// Delivery is delayed.
    Deferred,
    /// A temporary refusal.
    SoftBounce,
    /// A permanent refusal.
    HardBounce,
    /// Marked as spam.
    Complained,
    /// Opened.
    Opened,
    /// A link clicked.
    Clicked,
    /// The service dropped it (suppressed address).
    Dropped,
    /// The service took it for sending, or for Postmark a reactivation (an
    /// event mailroom ignores).
    Processed,
}

/// One event to report.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub happened: Happened,
    /// The id the send returned (for SendGrid, its `X-Message-Id`).
    pub message_id: String,
    /// The recipient.
    pub recipient: String,
    /// When, in unix seconds.
    pub at: i64,
    /// The event's own id (where the service has one).
    pub id: String,
    /// The metadata sent with the email, which the service echoes (see
    /// `Fake::echo`).
    pub metadata: BTreeMap<String, String>,
}

impl Event {
    /// An event with a fresh id.
    pub fn new(happened: Happened, message_id: &str, recipient: &str, at: i64) -> Self {
        Self {
            happened,
            message_id: message_id.to_string(),
            recipient: recipient.to_string(),
            at,
            id: uuid::Uuid::new_v4().to_string(),
            metadata: BTreeMap::new(),
        }
    }

    /// The same event, echoing `metadata` as the service does.
    pub fn echoing(mut self, metadata: BTreeMap<String, String>) -> Self {
        self.metadata = metadata;
        self
    }
}

/// One request as the service sends it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its headers (content type included).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

/// A service's webhook signer, with a freshly made key.
pub enum Signer {
    /// Svix: a `whsec_` secret.
    Resend { secret: String },
    /// Mailtrap: a 32 hex character signing secret.
    Mailtrap { secret: String },
    /// Mailgun: the HTTP webhook signing key.
    Mailgun { signing_key: String },
    /// SendGrid: an ECDSA P-256 key pair; the public half as settings show it.
    SendGrid {
        key_pair: Box<EcdsaKeyPair>,
        public_key: String,
    },
    /// Postmark: basic auth credentials in the webhook URL.
    Postmark { username: String, password: String },
}

fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(16))
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect::<String>()[..bytes * 2]
        .to_string()
}

impl Signer {
    /// A signer for `service` with a new random key.
    pub fn generate(service: Service) -> Self {
        match service {
            Service::Resend => Signer::Resend {
                secret: format!("whsec_{}", STANDARD.encode(random_hex(24).as_bytes())),
            },
            Service::Mailtrap => Signer::Mailtrap {
                secret: random_hex(16),
            },
            Service::Mailgun => Signer::Mailgun {
                signing_key: random_hex(16),
            },
            Service::SendGrid => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .expect("generating a P-256 key");
                let rng = SystemRandom::new();
                let key_pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    &key.serialize_der(),
                    &rng,
                )
                .expect("loading the P-256 key");
                Signer::SendGrid {
                    key_pair: Box::new(key_pair),
                    public_key: STANDARD
                        .encode(rcgen::PublicKeyData::subject_public_key_info(&key)),
                }
            }
            Service::Postmark => Signer::Postmark {
                username: "postmark".into(),
                password: random_hex(12),
            },
        }
    }

    /// The keys of the Secret that mailroom's `spec.webhook` names.
    pub fn secret_data(&self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, &str)> = match self {
            Signer::Resend { secret } | Signer::Mailtrap { secret } => {
                vec![("signingSecret", secret)]
            }
            Signer::Mailgun { signing_key } => vec![("signingKey", signing_key)],
            Signer::SendGrid { public_key, .. } => vec![("verificationKey", public_key)],
            Signer::Postmark { username, password } => {
                vec![("username", username), ("password", password)]
            }
        };
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The requests the service posts for `events`, signed at unix time
    /// `now`: one per event (Resend, Postmark, Mailgun) or one batch
    /// (Mailtrap, SendGrid).
    pub fn requests(&self, events: &[Event], now: i64) -> Vec<Request> {
        match self {
            Signer::Resend { .. } => events
                .iter()
                .map(|e| self.sign_as(&resend_body(e), &e.id, now))
                .collect(),
            Signer::Mailtrap { .. } => {
                let body = json!({"events": events.iter().map(mailtrap_event).collect::<Vec<_>>()});
                vec![self.sign(&body, now)]
            }
            Signer::Mailgun { .. } => events
                .iter()
                .map(|e| self.sign(&json!({"event-data": mailgun_event(e)}), now))
                .collect(),
            Signer::SendGrid { .. } => {
                let body = json!(events.iter().map(sendgrid_event).collect::<Vec<_>>());
                vec![self.sign(&body, now)]
            }
            Signer::Postmark { .. } => events
                .iter()
                .map(|e| self.sign(&postmark_record(e), now))
                .collect(),
        }
    }

    /// The request the service posts for one payload of its format, signed
    /// at unix time `now` (a Resend request gets a fresh message id).
    pub fn sign(&self, payload: &Value, now: i64) -> Request {
        self.sign_as(payload, &format!("msg_{}", random_hex(12)), now)
    }

    /// As [`Signer::sign`], with `id` as Resend's (Svix's) message id.
    fn sign_as(&self, payload: &Value, id: &str, now: i64) -> Request {
        let json_content = ("content-type".to_string(), "application/json".to_string());
        match self {
            Signer::Resend { secret } => svix(secret, id, now, payload),
            Signer::Mailtrap { secret } => {
                let body = payload.to_string().into_bytes();
                let signature = hmac_hex(secret.as_bytes(), &body);
                Request {
                    headers: vec![json_content, ("mailtrap-signature".into(), signature)],
                    body,
                }
            }
            Signer::Mailgun { signing_key } => {
                // The signature travels in the body, beside the event.
                let timestamp = now.to_string();
                let token = random_hex(25);
                let signature = hmac_hex(
                    signing_key.as_bytes(),
                    format!("{timestamp}{token}").as_bytes(),
                );
                let mut body = payload.clone();
                body["signature"] =
                    json!({"timestamp": timestamp, "token": token, "signature": signature});
                Request {
                    headers: vec![json_content],
                    body: body.to_string().into_bytes(),
                }
            }
            Signer::SendGrid { key_pair, .. } => {
                let body = format!("{payload}\r\n").into_bytes();
                let timestamp = now.to_string();
                let mut signed = timestamp.as_bytes().to_vec();
                signed.extend_from_slice(&body);
                let signature = key_pair
                    .sign(&SystemRandom::new(), &signed)
                    .expect("signing");
                Request {
                    headers: vec![
                        json_content,
                        (
                            "x-twilio-email-event-webhook-signature".into(),
                            STANDARD.encode(signature.as_ref()),
                        ),
                        ("x-twilio-email-event-webhook-timestamp".into(), timestamp),
                    ],
                    body,
                }
            }
            Signer::Postmark { username, password } => Request {
                headers: vec![
                    json_content,
                    (
                        "authorization".into(),
                        format!(
                            "Basic {}",
                            STANDARD.encode(format!("{username}:{password}"))
                        ),
                    ),
                ],
                body: payload.to_string().into_bytes(),
            },
        }
    }
}

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn svix(secret: &str, id: &str, now: i64, body: &Value) -> Request {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("a whsec_ secret");
    let body = body.to_string().into_bytes();
    let mut signed = format!("{id}.{now}.").into_bytes();
    signed.extend_from_slice(&body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let signature = STANDARD.encode(ring::hmac::sign(&key, &signed).as_ref());
    Request {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("svix-id".into(), id.into()),
            ("svix-timestamp".into(), now.to_string()),
            ("svix-signature".into(), format!("v1,{signature}")),
        ],
        body,
    }
}

fn iso(at: i64) -> String {
    jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn resend_body(e: &Event) -> Value {
    let mut data = json!({
        "email_id": e.message_id,
        "created_at": iso(e.at),
        "from": "Acme <onboarding@resend.dev>",
        "to": [e.recipient],
        "subject": "Sending this example",
    });
    if !e.metadata.is_empty() {
        data["tags"] = json!(e.metadata);
    }
    let type_ = match e.happened {
        Happened::Delivered => "email.delivered",
        Happened::Deferred => "email.delivery_delayed",
        Happened::SoftBounce | Happened::HardBounce => {
            let permanent = e.happened == Happened::HardBounce;
            data["bounce"] = json!({
                "type": if permanent { "Permanent" } else { "Transient" },
                "subType": if permanent { "General" } else { "MailboxFull" },
                "message": "The recipient's mail server refused the message.",
                "diagnosticCode": ["smtp; 550 5.1.1 user unknown"],
            });
            "email.bounced"
        }
        Happened::Complained => "email.complained",
        Happened::Opened => "email.opened",
        Happened::Clicked => {
            data["click"] = json!({"ipAddress": "203.0.113.7", "link": "https://example.com/x", "timestamp": iso(e.at), "userAgent": "Mozilla/5.0"});
            "email.clicked"
        }
        Happened::Dropped => {
            data["suppressed"] = json!({"type": "OnAccountSuppressionList", "reason": "previous_bounce", "message": "The address is on the suppression list."});
            "email.suppressed"
        }
        Happened::Processed => "email.sent",
    };
    json!({"type": type_, "created_at": iso(e.at), "data": data})
}

fn mailtrap_event(e: &Event) -> Value {
    let mut event = json!({
        "message_id": e.message_id,
        "event_id": e.id,
        "email": e.recipient,
        "timestamp": e.at,
        "sending_stream": "transactional",
        "sending_domain_name": "example.com",
    });
    if !e.metadata.is_empty() {
        event["custom_variables"] = json!(e.metadata);
    }
    let name = match e.happened {
        Happened::Delivered => "delivery",
        Happened::Deferred | Happened::SoftBounce => "soft bounce",
        Happened::HardBounce => "bounce",
        Happened::Complained => "spam",
        Happened::Opened => "open",
        Happened::Clicked => "click",
        Happened::Dropped => "reject",
        Happened::Processed => "activity_log.sent",
    };
    if matches!(
        e.happened,
        Happened::Deferred | Happened::SoftBounce | Happened::HardBounce
    ) {
        event["response"] = json!("550 5.1.1 user unknown");
        event["response_code"] = json!(550);
        event["bounce_category"] = json!("bad_mailbox");
    }
    if e.happened == Happened::Clicked {
        event["url"] = json!("https://example.com/x");
    }
    if e.happened == Happened::Dropped {
        event["reason"] = json!("unsubscribed");
    }
    event["event"] = json!(name);
    event
}

fn mailgun_event(e: &Event) -> Value {
    let mut data = json!({
        "id": &e.id[..22.min(e.id.len())],
        "timestamp": e.at as f64 + 0.25,
        "recipient": e.recipient,
        "log-level": "info",
        "message": {"headers": {"message-id": e.message_id, "from": "tests@mg.example.com", "to": e.recipient, "subject": "hi"}},
        "tags": [], "user-variables": e.metadata, "flags": {"is-test-mode": false},
    });
    let (name, severity, reason) = match e.happened {
        Happened::Delivered => ("delivered", None, None),
        Happened::Deferred | Happened::SoftBounce => ("failed", Some("temporary"), Some("generic")),
        Happened::HardBounce => ("failed", Some("permanent"), Some("bounce")),
        Happened::Complained => ("complained", None, None),
        Happened::Opened => ("opened", None, None),
        Happened::Clicked => ("clicked", None, None),
        Happened::Dropped => ("failed", Some("permanent"), Some("suppress-bounce")),
        Happened::Processed => ("accepted", None, None),
    };
    data["event"] = json!(name);
    if let Some(severity) = severity {
        data["severity"] = json!(severity);
        data["reason"] = json!(reason);
        data["delivery-status"] =
            json!({"code": 550, "message": "5.1.1 user unknown", "description": ""});
    }
    if e.happened == Happened::Clicked {
        data["url"] = json!("https://example.com/x");
    }
    data
}

fn sendgrid_event(e: &Event) -> Value {
    let mut event = json!({
        "email": e.recipient,
        "timestamp": e.at,
        "smtp-id": format!("<{}@ismtpd-555>", e.message_id),
        "sg_event_id": e.id,
        "sg_message_id": format!("{}.filterdrecv-5645d9c87f-78xgx-1-5F7E4B05-4.0", e.message_id),
        "category": ["mailroom"],
    });
    // custom_args arrive as top-level keys beside SendGrid's own.
    for (key, value) in &e.metadata {
        if event.get(key).is_none() {
            event[key] = json!(value);
        }
    }
    let name = match e.happened {
        Happened::Delivered => "delivered",
        Happened::Deferred | Happened::SoftBounce => "deferred",
        Happened::HardBounce => "bounce",
        Happened::Complained => "spamreport",
        Happened::Opened => "open",
        Happened::Clicked => "click",
        Happened::Dropped => "dropped",
        Happened::Processed => "processed",
    };
    match e.happened {
        Happened::Delivered => event["response"] = json!("250 OK"),
        Happened::Deferred | Happened::SoftBounce => {
            event["response"] = json!("400 try again later");
            event["attempt"] = json!("5");
        }
        Happened::HardBounce => {
            event["type"] = json!("bounce");
            event["status"] = json!("5.1.1");
            event["reason"] = json!("550 5.1.1 user unknown");
        }
        Happened::Dropped => event["reason"] = json!("Bounced Address"),
        Happened::Clicked => event["url"] = json!("https://example.com/x"),
        _ => {}
    }
    event["event"] = json!(name);
    event
}

/// Postmark's numeric bounce ids, made from the event id.
fn numeric_id(e: &Event) -> u64 {
    let hex: String =
        e.id.chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect();
    u64::from_str_radix(&hex, 16).unwrap_or(e.at as u64)
}

fn postmark_record(e: &Event) -> Value {
    let at = iso(e.at);
    let common = json!({"MessageID": e.message_id, "ServerID": 23, "MessageStream": "outbound", "Tag": "", "Metadata": e.metadata});
    let mut record = match e.happened {
        // Postmark posts nothing for a send; a reactivation is the record
        // mailroom has no use for.
        Happened::Processed => json!({
            "RecordType": "SubscriptionChange", "Recipient": e.recipient, "ChangedAt": at,
            "Origin": "Recipient", "SuppressSending": false, "SuppressionReason": null,
        }),
        Happened::Delivered => json!({
            "RecordType": "Delivery", "Recipient": e.recipient, "DeliveredAt": at,
            "Details": "smtp;250 2.0.0 OK",
        }),
        Happened::Deferred | Happened::SoftBounce | Happened::HardBounce | Happened::Dropped => {
            let (kind, code) = match e.happened {
                Happened::HardBounce => ("HardBounce", 1),
                Happened::Dropped => ("ManuallyDeactivated", 16),
                _ => ("SoftBounce", 4096),
            };
            json!({
                "RecordType": "Bounce", "ID": numeric_id(e), "Type": kind, "TypeCode": code,
                "Name": kind, "Description": "The server was unable to deliver your message",
                "Details": "smtp;550 5.1.1 user unknown", "Email": e.recipient, "From": "tests@mailroom.dev",
                "BouncedAt": at, "DumpAvailable": false, "Inactive": e.happened == Happened::HardBounce,
                "CanActivate": true, "Subject": "hi",
            })
        }
        Happened::Complained => json!({
            "RecordType": "SpamComplaint", "ID": numeric_id(e), "Type": "SpamComplaint", "TypeCode": 512,
            "Name": "Spam complaint", "Description": "The subscriber explicitly marked this message as spam.",
            "Details": "", "Email": e.recipient, "From": "tests@mailroom.dev", "BouncedAt": at,
            "DumpAvailable": false, "Inactive": true, "CanActivate": false, "Subject": "hi",
        }),
        Happened::Opened => json!({
            "RecordType": "Open", "FirstOpen": true, "Recipient": e.recipient, "ReceivedAt": at,
            "Platform": "WebMail", "ReadSeconds": 5, "UserAgent": "Mozilla/5.0",
            "Client": {"Name": "Chrome", "Company": "Google", "Family": "Chrome"},
            "OS": {"Name": "Linux", "Company": "", "Family": "Linux"}, "Geo": {},
        }),
        Happened::Clicked => json!({
            "RecordType": "Click", "ClickLocation": "HTML", "OriginalLink": "https://example.com/x",
            "Recipient": e.recipient, "ReceivedAt": at, "Platform": "Desktop", "UserAgent": "Mozilla/5.0",
            "Client": {}, "OS": {}, "Geo": {},
        }),
    };
    if let (Some(record), Some(common)) = (record.as_object_mut(), common.as_object()) {
        for (k, v) in common {
            record.insert(k.clone(), v.clone());
        }
    }
    record
}
