//! What `mailroom render` prints: the MIME message (`eml`, as lettre
//! writes it for SMTP; the Date and boundaries differ each time), the HTML
//! or text body, or JSON of every part (stable, for reviews and tests).

use serde_json::{Value, json};

use crate::compose::Email;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The MIME message, as sent over SMTP.
    Eml,
    /// The HTML body.
    Html,
    /// The text body.
    Text,
    /// Every part as JSON.
    Json,
}

/// `email` in `format`.
pub fn print(email: &Email, format: Format) -> Result<String, String> {
    match format {
        Format::Eml => {
            let message = crate::transport::smtp::to_lettre(email).map_err(|e| e.message)?;
            Ok(String::from_utf8_lossy(&message.formatted()).into_owned())
        }
        Format::Html => email
            .html
            .clone()
            .ok_or_else(|| "the message has no HTML body (try -o text)".to_string()),
        Format::Text => email
            .text
            .clone()
            .ok_or_else(|| "the message has no text body (try -o html)".to_string()),
        Format::Json => serde_json::to_string_pretty(&json_of(email)).map_err(|e| e.to_string()),
    }
}

fn json_of(email: &Email) -> Value {
    let mailboxes = |list: &[lettre::message::Mailbox]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    json!({
        "from": email.from.to_string(),
        "to": mailboxes(&email.to),
        "cc": mailboxes(&email.cc),
        "bcc": mailboxes(&email.bcc),
        "replyTo": mailboxes(&email.reply_to),
        "subject": email.subject,
        "headers": email.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        "tags": email.tags,
        "metadata": email.metadata,
        "text": email.text,
        "html": email.html,
        "tracking": {"opens": email.tracking.opens, "clicks": email.tracking.clicks},
        "storedTemplate": email.stored_template.as_ref().map(|t| json!({"id": t.id, "version": t.version, "data": t.data})),
    })
}
