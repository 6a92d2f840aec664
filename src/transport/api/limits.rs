//! Each service's published limits, checked before a request is built, so a
//! message the service would refuse fails at once as InvalidRequest naming
//! the field and the limit, instead of after a round trip. docs/providers.md
//! carries the same table with the source of every number; a unit test keeps
//! the two equal.

use crate::api::provider::ApiProvider;
use crate::compose::Email;
use crate::transport::{FailureKind, SendError};

/// One service's limits. `None`: the service publishes none the schema does
/// not already enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The service.
    pub service: ApiProvider,
    /// Addresses in `to`.
    pub to: Option<usize>,
    /// Addresses in each of `cc` and `bcc`.
    pub cc_bcc: Option<usize>,
    /// Addresses in to, cc and bcc together.
    pub recipients: Option<usize>,
    /// Tags sent as the service's tags or categories.
    pub tags: Option<usize>,
    /// Emails in one batch request.
    pub batch: usize,
    /// Bytes of one batch request, where each email carries its own content
    /// (Mailtrap's and Postmark's batches).
    pub batch_bytes: Option<usize>,
    /// Bytes of one email: subject, bodies and attachments (base64).
    pub email_bytes: Option<usize>,
    /// Bytes of the options sent beside the email (Mailgun's `o:`, `h:`,
    /// `v:` and `t:` fields together).
    pub option_bytes: Option<usize>,
}

/// Every service's limits, as docs/providers.md lists them.
pub const LIMITS: [Limits; 5] = [
    Limits {
        service: ApiProvider::Mailtrap,
        to: Some(1000),
        cc_bcc: Some(1000),
        recipients: None,
        tags: None,
        batch: 500,
        batch_bytes: Some(50 * 1000 * 1000),
        email_bytes: None,
        option_bytes: None,
    },
    Limits {
        service: ApiProvider::Resend,
        to: Some(50),
        cc_bcc: None,
        recipients: None,
        tags: None,
        batch: 100,
        batch_bytes: None,
        email_bytes: None,
        option_bytes: None,
    },
    Limits {
        service: ApiProvider::Postmark,
        to: None,
        cc_bcc: None,
        recipients: Some(50),
        tags: None,
        batch: 500,
        batch_bytes: Some(50 * 1000 * 1000),
        email_bytes: Some(10 * 1000 * 1000),
        option_bytes: None,
    },
    Limits {
        service: ApiProvider::Mailgun,
        to: None,
        cc_bcc: None,
        recipients: Some(1000),
        tags: Some(3),
        batch: 1000,
        batch_bytes: None,
        email_bytes: None,
        option_bytes: Some(16 * 1024),
    },
    Limits {
        service: ApiProvider::SendGrid,
        to: None,
        cc_bcc: None,
        recipients: Some(1000),
        tags: Some(10),
        batch: 1000,
        batch_bytes: None,
        email_bytes: Some(30 * 1000 * 1000),
        option_bytes: None,
    },
];

/// The limits of `service`.
pub fn of(service: ApiProvider) -> &'static Limits {
    LIMITS
        .iter()
        .find(|l| l.service == service)
        .unwrap_or(&LIMITS[0])
}

/// `Ok` when `email` is within every limit of `service`; otherwise the
/// first limit it passes, naming the field.
pub fn check(service: ApiProvider, email: &Email) -> Result<(), SendError> {
    let limits = of(service);
    let name = service.name();
    let over = |field: &str, count: usize, limit: Option<usize>, what: &str| match limit {
        Some(limit) if count > limit => Err(SendError::new(
            FailureKind::InvalidRequest,
            format!("{field}: {count} {what}; {name} takes at most {limit}"),
        )),
        _ => Ok(()),
    };
    over("spec.to", email.to.len(), limits.to, "addresses")?;
    over("spec.cc", email.cc.len(), limits.cc_bcc, "addresses")?;
    over("spec.bcc", email.bcc.len(), limits.cc_bcc, "addresses")?;
    let recipients = email.to.len() + email.cc.len() + email.bcc.len();
    over(
        "spec.to, cc and bcc",
        recipients,
        limits.recipients,
        "recipients in all",
    )?;
    over("spec.tags", email.tags.len(), limits.tags, "tags")?;
    over(
        "spec (subject, text, html, attachments)",
        email_bytes(email),
        limits.email_bytes,
        "bytes as the service receives them",
    )?;
    over(
        "spec (headers, tags, metadata)",
        option_bytes(email),
        limits.option_bytes,
        "bytes of options",
    )?;
    if service == ApiProvider::Postmark {
        postmark_metadata(email)?;
    }
    Ok(())
}

/// Postmark's metadata: at most 10 fields, names of at most 20 characters
/// and values of at most 80 (its "Custom metadata" documentation).
/// mailroom's own fields (the message's origin) count among the ten.
pub const POSTMARK_METADATA: (usize, usize, usize) = (10, 20, 80);

fn postmark_metadata(email: &Email) -> Result<(), SendError> {
    let (fields, key_chars, value_chars) = POSTMARK_METADATA;
    let echoed = email.echoed();
    let refuse = |text: String| Err(SendError::new(FailureKind::InvalidRequest, text));
    if echoed.len() > fields {
        let own = email.metadata.len();
        let ours = echoed.len() - own;
        return refuse(format!(
            "spec.metadata: {own} fields; Postmark takes at most {fields}, and mailroom uses {ours} of them to match delivery events"
        ));
    }
    for (key, value) in &email.metadata {
        if key.chars().count() > key_chars {
            return refuse(format!(
                "spec.metadata[{key}]: Postmark takes field names of at most {key_chars} characters"
            ));
        }
        if value.chars().count() > value_chars {
            return refuse(format!(
                "spec.metadata[{key}]: Postmark takes values of at most {value_chars} characters"
            ));
        }
    }
    Ok(())
}

/// The bytes of an email as an API receives it: subject, bodies, and each
/// attachment base64-encoded.
pub fn email_bytes(email: &Email) -> usize {
    let attachments: usize = email
        .attachments
        .iter()
        .map(|a| a.content.len().div_ceil(3) * 4 + a.filename.len())
        .sum();
    email.subject.len()
        + email.text.as_ref().map_or(0, String::len)
        + email.html.as_ref().map_or(0, String::len)
        + attachments
}

/// The bytes of the options Mailgun counts: each `h:`, `o:tag` and `v:`
/// field's name and value.
fn option_bytes(email: &Email) -> usize {
    let headers: usize = email
        .headers
        .iter()
        .map(|(n, v)| 2 + n.len() + v.len())
        .sum();
    let tags: usize = email.tags.iter().map(|t| 5 + t.len()).sum();
    let metadata: usize = email
        .echoed()
        .iter()
        .map(|(k, v)| 2 + k.len() + v.len())
        .sum();
    headers + tags + metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the limits table in docs/providers.md, as
    /// (service, column, value) with `-` for none.
    fn documented() -> Vec<Vec<String>> {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/providers.md"))
                .expect("docs/providers.md");
        let table = docs
            .split("<!-- limits -->")
            .nth(1)
            .expect("the limits table between <!-- limits --> markers");
        table
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| service"))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().replace(',', ""))
                    .collect()
            })
            .collect()
    }

    fn cell(n: Option<usize>) -> String {
        n.map_or("-".into(), |n| n.to_string())
    }

    #[test]
    fn the_docs_table_lists_the_limits_the_code_enforces() {
        let rows = documented();
        assert_eq!(rows.len(), LIMITS.len(), "{rows:?}");
        for (row, limits) in rows.iter().zip(LIMITS.iter()) {
            let code = [
                limits.service.name().to_string(),
                cell(limits.to),
                cell(limits.cc_bcc),
                cell(limits.recipients),
                cell(limits.tags),
                limits.batch.to_string(),
                cell(limits.batch_bytes),
                cell(limits.email_bytes),
                cell(limits.option_bytes),
            ];
            assert_eq!(&row[..code.len()], &code[..], "docs/providers.md row");
        }
    }

    #[test]
    fn the_batch_sizes_are_the_documented_ones() {
        for limits in LIMITS {
            assert_eq!(super::super::batch::size(limits.service), limits.batch);
        }
    }
}
