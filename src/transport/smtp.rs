//! The SMTP transport, on lettre: TLS modes (STARTTLS required, implicit TLS,
//! or none by explicit choice), extra CAs, AUTH PLAIN/LOGIN/XOAUTH2, a pooled
//! connection per provider, and the mapping of SMTP replies to [`SendError`].

use std::time::Duration;

use super::smtp_connections::{Connections, Ended, InUse};
use async_trait::async_trait;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailboxes, MessageBuilder, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Accepted, FailureKind, SendError, Transport, Verification, classify};
use crate::api::provider::{AuthMechanism, SmtpSpec, TlsMode};
use crate::compose::Email;

/// Credentials read from the provider's Secret.
#[derive(Clone)]
pub struct SmtpCredentials {
    /// The SASL mechanism.
    pub mechanism: AuthMechanism,
    /// The user name.
    pub username: String,
    /// The password, or the OAuth 2.0 access token for XOAuth2.
    pub secret: String,
}

impl std::fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The envelope sender of a provider with a bounce mailbox: the bounce
/// address with each message's token, or without one while the token key
/// cannot be read (bounces are then matched by Message-ID).
#[derive(Debug, Clone)]
pub struct Verp {
    /// The bounce address.
    pub address: crate::delivery::token::BounceAddress,
    /// The provider's token key.
    pub key: Option<crate::delivery::token::TokenKey>,
}

impl Verp {
    /// The envelope sender for `email`.
    pub fn sender_for(&self, email: &Email) -> String {
        let identity = email.key.get(..32).and_then(crate::ledger::Identity::parse);
        let recipient = email.origin.as_ref().and_then(|o| o.recipient);
        let token = self
            .key
            .as_ref()
            .zip(identity)
            .and_then(|(key, id)| crate::delivery::token::make(key, &id, recipient));
        match token {
            Some(token) => self.address.with_token(&token),
            None => self.address.plain(),
        }
    }
}

/// An SMTP server, with a pool of connections to it.
pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    /// The envelope sender naming each message, with a bounce mailbox.
    verp: Option<Verp>,
    /// Signs every message, with `smtp.dkim`.
    dkim: Option<super::dkim::Signer>,
    /// The most a whole verification or send may take: lettre bounds only
    /// the TCP connect, and a server that stalls after it (its greeting, a
    /// command, the reply to DATA) must not hold a send slot for ever.
    attempt_limit: Duration,
    /// The connections that may be in use at once (16 at first, up to
    /// `pool.maxConnections` while the server takes more): lettre's pool
    /// bounds only the idle connections it keeps, and opens another for
    /// every send beyond them.
    connections: Connections,
}

/// How many connections past the pool's start one send may find refused
/// (each lowers the pool to what the server took) before it fails.
const MAX_REFUSALS: u32 = 3;

/// How many of the provider's `timeoutSeconds` a whole attempt may take.
pub const ATTEMPT_LIMIT_FACTOR: u32 = 2;

impl SmtpTransport {
    /// Builds the transport for `spec`, with extra CA certificates (PEM) and
    /// credentials resolved from Secrets. Connects lazily.
    pub fn new(
        spec: &SmtpSpec,
        ca_pem: Option<&[u8]>,
        credentials: Option<SmtpCredentials>,
    ) -> Result<Self, SendError> {
        let tls_parameters = || -> Result<TlsParameters, SendError> {
            let mut builder = TlsParameters::builder(spec.host.clone());
            if let Some(pem) = ca_pem {
                let has_certificate =
                    std::str::from_utf8(pem).is_ok_and(|s| s.contains("BEGIN CERTIFICATE"));
                let certs = Certificate::from_pem(pem)
                    .ok()
                    .filter(|_| has_certificate)
                    .ok_or_else(|| {
                        SendError::new(
                            FailureKind::Tls,
                            "the CA bundle holds no valid PEM certificate",
                        )
                    })?;
                builder = builder.add_root_certificate(certs);
            }
            builder
                .build_rustls()
                .map_err(|e| SendError::new(FailureKind::Tls, format!("TLS setup failed: {e}")))
        };
        let tls = match spec.tls {
            TlsMode::StartTLS => Tls::Required(tls_parameters()?),
            TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
            TlsMode::None => Tls::None,
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(spec.host.as_str())
                .port(spec.port)
                .tls(tls)
                .timeout(Some(Duration::from_secs(u64::from(spec.timeout_seconds))))
                .pool_config(
                    PoolConfig::new()
                        .max_size(spec.pool.max_connections)
                        .idle_timeout(Duration::from_secs(u64::from(
                            spec.pool.idle_timeout_seconds,
                        ))),
                );
        if let Some(helo) = &spec.helo_name {
            builder = builder.hello_name(ClientId::Domain(helo.clone()));
        }
        if let Some(creds) = credentials {
            let mechanism = match creds.mechanism {
                AuthMechanism::Plain => Mechanism::Plain,
                AuthMechanism::Login => Mechanism::Login,
                AuthMechanism::XOAuth2 => Mechanism::Xoauth2,
            };
            builder = builder
                .credentials(Credentials::new(creds.username, creds.secret))
                .authentication(vec![mechanism]);
        }
        Ok(Self {
            inner: builder.build(),
            verp: None,
            dkim: None,
            attempt_limit: Duration::from_secs(u64::from(
                spec.timeout_seconds.saturating_mul(ATTEMPT_LIMIT_FACTOR),
            )),
            connections: Connections::new(spec.pool.max_connections),
        })
    }
}

impl SmtpTransport {
    /// Waits for one of the connections the pool allows now, until the
    /// attempt's `deadline`. Nothing has been sent when this fails.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<InUse<'_>, SendError> {
        match tokio::time::timeout_at(deadline, self.connections.acquire()).await {
            Ok(in_use) => Ok(in_use),
            Err(_) => Err(SendError::new(
                FailureKind::Transient,
                format!(
                    "all {} connections the pool allows now (spec.smtp.pool.maxConnections: {}) stayed busy for {} s; nothing was sent",
                    self.connections.ceiling(),
                    self.connections.max(),
                    self.attempt_limit.as_secs()
                ),
            )),
        }
    }

    /// Sends with envelope senders that name each message.
    pub fn with_verp(mut self, verp: Verp) -> Self {
        self.verp = Some(verp);
        self
    }

    /// Signs every message with DKIM.
    pub fn with_dkim(mut self, signer: super::dkim::Signer) -> Self {
        self.dkim = Some(signer);
        self
    }
}

#[async_trait]
impl Transport for SmtpTransport {
    fn name(&self) -> &'static str {
        "SMTP"
    }

    fn sets_message_id(&self) -> bool {
        true
    }

    fn connection_limit(&self) -> Option<usize> {
        Some(self.connections.ceiling() as usize)
    }

    fn connection_wanted(&self) {
        self.connections.wanted();
    }

    async fn verify(&self) -> Result<Verification, SendError> {
        let _connection = self
            .connection(tokio::time::Instant::now() + self.attempt_limit)
            .await?;
        let checked = tokio::time::timeout(self.attempt_limit, self.inner.test_connection()).await;
        match checked {
            Err(_) => Err(SendError::new(
                FailureKind::Unreachable,
                format!(
                    "the server did not finish answering within {} s (twice timeoutSeconds)",
                    self.attempt_limit.as_secs()
                ),
            )),
            Ok(Ok(true)) => Ok(Verification::Verified),
            Ok(Ok(false)) => Err(SendError::new(
                FailureKind::Unreachable,
                "the server closed the connection",
            )),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }

    async fn send(&self, email: &Email) -> Result<Accepted, SendError> {
        let mut message = to_lettre(email)?;
        if let Some(signer) = &self.dkim {
            message.sign(&signer.config);
        }
        let envelope = match &self.verp {
            None => message.envelope().clone(),
            Some(verp) => {
                let sender = verp.sender_for(email).parse().map_err(|e| {
                    SendError::new(
                        FailureKind::InvalidRequest,
                        format!("spec.smtp.bounces.address: not a valid envelope sender: {e}"),
                    )
                })?;
                lettre::address::Envelope::new(Some(sender), message.envelope().to().to_vec())
                    .map_err(|e| {
                        SendError::new(FailureKind::InvalidRequest, format!("the envelope: {e}"))
                    })?
            }
        };
        let raw = message.formatted();
        let deadline = tokio::time::Instant::now() + self.attempt_limit;
        let mut refusals = 0;
        loop {
            let connection = self.connection(deadline).await?;
            let past_start = connection.past_start();
            let sent =
                tokio::time::timeout_at(deadline, self.inner.send_raw(&envelope, &raw)).await;
            let result = match sent {
                Ok(result) => result.map_err(|e| classify(&e)),
                Err(_) => Err(stalled(self.attempt_limit)),
            };
            // lettre puts the connection back in its pool from a task of its
            // own: let it run first, so the next send finds it idle instead
            // of opening one more than the pool allows.
            tokio::task::yield_now().await;
            let ended = match &result {
                Ok(_) => Ended::Accepted,
                Err(e) if refused(e) => Ended::Refused,
                Err(_) => Ended::Other,
            };
            connection.ended(ended);
            match result {
                // A connection past the pool's start met the server's cap:
                // nothing was taken, and the pool is back to the connections
                // the server took; the message goes on one of those.
                Err(e)
                    if ended == Ended::Refused
                        && past_start
                        && !e.maybe_delivered
                        && refusals < MAX_REFUSALS =>
                {
                    refusals += 1;
                }
                result => return Ok(accepted(&result?)),
            }
        }
    }
}

/// The accepted reply: its code, text, and the queue id where the server
/// names one (`250 2.0.0 Ok: queued as 4Xy...`).
fn accepted(response: &Response) -> Accepted {
    let text = response.message().collect::<Vec<_>>().join(" ");
    Accepted {
        provider_message_id: queue_id(&text),
        code: u16::from(response.code()),
        message: text,
        all_ids: Vec::new(),
    }
}

/// The queue id in a 250 reply, in the forms Postfix, Exim, Sendmail and
/// mailpit use (`queued as ID`, `id=ID`).
pub fn queue_id(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = if let Some(i) = lower.find("queued as ") {
        i + "queued as ".len()
    } else if let Some(i) = lower.find("id=") {
        i + "id=".len()
    } else {
        return None;
    };
    let id: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-._@<>".contains(*c))
        .collect();
    let id = id
        .trim_matches(|c| c == '<' || c == '>' || c == '.')
        .to_string();
    (!id.is_empty()).then_some(id)
}

fn header_error(name: &str, e: impl std::fmt::Display) -> SendError {
    SendError::new(
        FailureKind::InvalidRequest,
        format!("spec.headers[{name}]: {e}"),
    )
}

/// The lettre message for `email`. Bcc recipients go into the envelope only:
/// lettre leaves the Bcc header out of what it sends.
pub(crate) fn to_lettre(email: &Email) -> Result<Message, SendError> {
    let mut builder: MessageBuilder = Message::builder()
        .from(email.from.clone())
        .subject(email.subject.clone())
        .message_id(Some(email.message_id.clone()))
        .date_now();
    for m in &email.to {
        builder = builder.to(m.clone());
    }
    for m in &email.cc {
        builder = builder.cc(m.clone());
    }
    for m in &email.bcc {
        builder = builder.bcc(m.clone());
    }
    if !email.reply_to.is_empty() {
        let list: Mailboxes = email.reply_to.iter().cloned().collect();
        for m in list {
            builder = builder.reply_to(m);
        }
    }
    if !email.tags.is_empty() {
        let name = HeaderName::new_from_ascii_str("X-Tags");
        builder = builder.raw_header(HeaderValue::new(name, email.tags.join(", ")));
    }
    if !email.metadata.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> = email
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let name = HeaderName::new_from_ascii_str("X-Mailroom-Metadata");
        builder = builder.raw_header(HeaderValue::new(
            name,
            serde_json::Value::Object(map).to_string(),
        ));
    }
    for (name, value) in &email.headers {
        let header_name =
            HeaderName::new_from_ascii(name.clone()).map_err(|e| header_error(name, e))?;
        builder = builder.raw_header(HeaderValue::new(header_name, value.clone()));
    }
    let built = match mime_tree(email)? {
        Part::Single(part) => builder.singlepart(part),
        Part::Multi(part) => builder.multipart(part),
    };
    built.map_err(|e| {
        SendError::new(
            FailureKind::InvalidRequest,
            format!("the message cannot be built: {e}"),
        )
    })
}

/// A file as base64: its bytes go out exactly as read (a text file's bare
/// line feeds are not rewritten on the way, which would break a DKIM body
/// hash), in lines a server takes.
fn base64_body(content: &[u8]) -> lettre::message::Body {
    lettre::message::Body::new_with_encoding(
        content.to_vec(),
        lettre::message::header::ContentTransferEncoding::Base64,
    )
    .unwrap_or_else(lettre::message::Body::new)
}

/// A MIME body: one part, or a multipart tree.
enum Part {
    Single(SinglePart),
    Multi(MultiPart),
}

impl Part {
    fn into_multipart(self, outer: MultiPart) -> MultiPart {
        match self {
            Part::Single(part) => outer.singlepart(part),
            Part::Multi(part) => outer.multipart(part),
        }
    }
}

/// The body's MIME tree: `multipart/mixed` (when there are files) around
/// `multipart/related` (when there are inline images) around the text and
/// html (`multipart/alternative` when both are set).
fn mime_tree(email: &Email) -> Result<Part, SendError> {
    let mut tree = match (&email.text, &email.html) {
        (Some(text), Some(html)) => Part::Multi(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (Some(text), None) => Part::Single(SinglePart::plain(text.clone())),
        (None, Some(html)) => Part::Single(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html.clone()),
        ),
        (None, None) => {
            return Err(SendError::new(
                FailureKind::InvalidRequest,
                "spec.text: a body is required",
            ));
        }
    };
    let (inline, files): (Vec<_>, Vec<_>) = email
        .attachments
        .iter()
        .enumerate()
        .partition(|(_, a)| a.is_inline());
    if !inline.is_empty() {
        let mut related = tree.into_multipart(MultiPart::related().build());
        for (i, file) in inline {
            let id = file.content_id.clone().unwrap_or_default();
            let part = lettre::message::Attachment::new_inline_with_name(id, file.filename.clone())
                .body(
                    base64_body(&file.content),
                    content_type(i, &file.content_type)?,
                );
            related = related.singlepart(part);
        }
        tree = Part::Multi(related);
    }
    if !files.is_empty() {
        let mut mixed = tree.into_multipart(MultiPart::mixed().build());
        for (i, file) in files {
            let part = lettre::message::Attachment::new(file.filename.clone()).body(
                base64_body(&file.content),
                content_type(i, &file.content_type)?,
            );
            mixed = mixed.singlepart(part);
        }
        tree = Part::Multi(mixed);
    }
    Ok(tree)
}

fn content_type(index: usize, value: &str) -> Result<ContentType, SendError> {
    ContentType::parse(value).map_err(|e| {
        SendError::new(
            FailureKind::InvalidRequest,
            format!("spec.attachments[{index}].contentType: {value:?} is not a MIME type: {e}"),
        )
    })
}

/// An attempt cut off at its limit: the server may have the message (the
/// cut may come after DATA), as for any timeout while sending.
fn stalled(limit: Duration) -> SendError {
    let rule = classify::signal("timeout or connection lost while sending");
    let mut e = SendError::new(
        rule.kind,
        format!(
            "{}: the server did not finish answering within {} s (twice timeoutSeconds)",
            rule.meaning,
            limit.as_secs()
        ),
    );
    e.maybe_delivered = rule.maybe_delivered;
    e
}

/// Whether the server refused the connection with a 421 reply, its way of
/// saying it takes no more from this client (Postfix past its per-client
/// cap). A connection that could not be opened at all is a server down or
/// unreachable, not a cap: the pool does not learn from it.
fn refused(error: &SendError) -> bool {
    error.code == Some(421)
}

/// Maps a lettre error to the shared kinds through [`classify`]'s table.
pub fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let text = error.to_string();
    if let Some(code) = error.status() {
        let numeric = u16::from(code);
        let reply = text
            .split_once(": ")
            .map_or(text.as_str(), |(_, reply)| reply);
        let rule = classify::smtp_reply(numeric, reply);
        let mut e =
            SendError::new(rule.kind, format!("the server replied {text}")).with_code(numeric);
        e.maybe_delivered = rule.maybe_delivered;
        return e;
    }
    let lower = text.to_ascii_lowercase();
    let signal = if lower.contains("starttls") {
        "STARTTLS required but not offered"
    } else if error.is_tls() {
        "TLS handshake or certificate failure"
    } else if lower.contains("authentication mechanism") {
        "no common AUTH mechanism"
    } else if error.is_timeout() {
        "timeout or connection lost while sending"
    } else if error.is_client() {
        "message refused by the client before sending"
    } else if error.is_response() {
        "malformed server reply"
    } else if lower.starts_with("connection error")
        || lower.contains("refused")
        || lower.contains("resolve")
        || lower.contains("lookup")
        || lower.contains("dns")
    {
        // lettre's "Connection error" comes only from setting the
        // connection up (DNS, connect, TLS set-up): nothing was sent.
        "connection refused, reset before sending, DNS failure"
    } else {
        "timeout or connection lost while sending"
    };
    let rule = classify::signal(signal);
    let mut e = SendError::new(rule.kind, format!("{}: {text}", rule.meaning));
    e.maybe_delivered = rule.maybe_delivered;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lettre reports every failure to set a connection up (a name that does
    /// not resolve, a refused or timed-out connect) as a "Connection error":
    /// nothing was sent, so it is never "the server may have the message".
    #[tokio::test]
    async fn a_failure_to_connect_is_never_a_maybe_delivered() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let transport: AsyncSmtpTransport<Tokio1Executor> =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(port)
                .tls(Tls::None)
                .build();
        let error = transport
            .test_connection()
            .await
            .expect_err("nothing listens there");
        assert!(error.to_string().starts_with("Connection error"), "{error}");
        let classified = classify(&error);
        assert_eq!(classified.kind, FailureKind::Unreachable);
        assert!(!classified.maybe_delivered, "{}", classified.message);
    }

    /// Only a 421 teaches the pool a cap: a server that cannot be reached
    /// at all is down, and shrinking the pool for it would slow every send
    /// for ten minutes after it is back.
    #[test]
    fn only_a_421_is_a_refused_connection() {
        let reply = |code| SendError::new(FailureKind::Transient, "reply").with_code(code);
        assert!(refused(&reply(421)));
        assert!(!refused(&reply(450)));
        assert!(!refused(&SendError::new(
            FailureKind::Unreachable,
            "connection refused"
        )));
    }

    #[test]
    fn finds_queue_ids_in_common_replies() {
        assert_eq!(
            queue_id("2.0.0 Ok: queued as 4Xy9Z2abc").as_deref(),
            Some("4Xy9Z2abc")
        );
        assert_eq!(
            queue_id("Ok: queued as BbN5iGDFP2WnzzqU8Fv5ZM").as_deref(),
            Some("BbN5iGDFP2WnzzqU8Fv5ZM")
        );
        assert_eq!(
            queue_id("OK id=1qABCd-0004Xy-1a").as_deref(),
            Some("1qABCd-0004Xy-1a")
        );
        assert_eq!(queue_id("2.0.0 OK"), None);
    }
}
