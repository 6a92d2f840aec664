//! A typed client for mailpit's REST API: search and read received messages,
//! their headers and their SMTP recipients.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// A mailpit server's API.
#[derive(Clone)]
pub struct Mailpit {
    base: String,
    http: reqwest::Client,
}

/// A mailbox as mailpit reports it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Address {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// A received message as listed by search.
#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    #[serde(rename = "Subject")]
    pub subject: String,
    #[serde(rename = "To", default)]
    pub to: Vec<Address>,
}

/// A received message, read whole.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    #[serde(rename = "From")]
    pub from: Option<Address>,
    #[serde(rename = "To", default)]
    pub to: Vec<Address>,
    #[serde(rename = "Cc", default)]
    pub cc: Vec<Address>,
    /// Envelope recipients that appear in no header.
    #[serde(rename = "Bcc", default)]
    pub bcc: Vec<Address>,
    #[serde(rename = "ReplyTo", default)]
    pub reply_to: Vec<Address>,
    #[serde(rename = "Subject")]
    pub subject: String,
    #[serde(rename = "Text")]
    pub text: String,
    #[serde(rename = "HTML")]
    pub html: String,
    /// The envelope sender.
    #[serde(rename = "ReturnPath", default)]
    pub return_path: String,
}

#[derive(Deserialize)]
struct SearchResult {
    messages: Vec<Summary>,
}

impl Mailpit {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8025`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// The environment's mailpit.
    pub fn shared() -> Self {
        Self::new(&super::env().mailpit_api)
    }

    /// Messages matching a mailpit search query (e.g. `subject:"x"`, `to:a@b`).
    pub async fn search(&self, query: &str) -> Vec<Summary> {
        let res = self
            .http
            .get(format!("{}/api/v1/search", self.base))
            .query(&[("query", query), ("limit", "1000")])
            .send()
            .await
            .expect("mailpit search");
        assert!(
            res.status().is_success(),
            "mailpit search: {}",
            res.status()
        );
        res.json::<SearchResult>()
            .await
            .expect("mailpit search body")
            .messages
    }

    /// Every message the server holds (newest first).
    pub async fn all(&self) -> Vec<Summary> {
        let mut out = Vec::new();
        loop {
            let page: SearchResult = self
                .get_json(&format!("/api/v1/messages?limit=500&start={}", out.len()))
                .await;
            let got = page.messages.len();
            out.extend(page.messages);
            if got < 500 {
                return out;
            }
        }
    }

    /// How many messages the server holds in all.
    pub async fn count(&self) -> u64 {
        #[derive(Deserialize)]
        struct List {
            total: u64,
        }
        self.get_json::<List>("/api/v1/messages?limit=1")
            .await
            .total
    }

    /// Waits until at least `count` messages match `query`, and returns them.
    pub async fn wait_for(&self, query: &str, count: usize, timeout: Duration) -> Vec<Summary> {
        super::eventually(
            &format!("{count} message(s) matching {query:?} in mailpit"),
            timeout,
            || async {
                let found = self.search(query).await;
                (found.len() >= count).then_some(found)
            },
        )
        .await
    }

    /// One message, read whole.
    pub async fn message(&self, id: &str) -> Message {
        self.get_json(&format!("/api/v1/message/{id}")).await
    }

    /// The headers of one message, name to values, as received.
    pub async fn headers(&self, id: &str) -> BTreeMap<String, Vec<String>> {
        self.get_json(&format!("/api/v1/message/{id}/headers"))
            .await
    }

    /// The raw source of one message.
    pub async fn raw(&self, id: &str) -> String {
        let res = self
            .http
            .get(format!("{}/api/v1/message/{id}/raw", self.base))
            .send()
            .await
            .expect("mailpit raw");
        res.text().await.expect("mailpit raw body")
    }

    /// The headers exactly as the client sent them: mailpit prepends its own
    /// (a `Bcc:` line listing envelope-only recipients, `Return-Path:` and a
    /// `Received:` trace), which are cut off here.
    pub async fn client_headers(&self, id: &str) -> String {
        let raw = self.raw(id).await;
        let head = raw
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .replace("\r\n", "\n");
        let mut lines = head.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("Received:") {
                while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                    lines.next();
                }
                return lines.collect::<Vec<_>>().join("\n");
            }
        }
        panic!("no Received: header from mailpit in message {id}");
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> T {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("mailpit GET");
        assert!(
            res.status().is_success(),
            "mailpit GET {path}: {}",
            res.status()
        );
        res.json().await.expect("mailpit JSON")
    }
}
