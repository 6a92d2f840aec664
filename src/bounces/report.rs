//! What a message in the bounce mailbox is: a delivery status notification
//! (RFC 3464, as Postfix, Exim, Microsoft 365 and Gmail send them), a text
//! bounce that names its recipients only in `X-Failed-Recipients` (classic
//! Exim), a feedback report (RFC 5965 ARF: a complaint), an auto-reply (never a
//! bounce), something else, or a report too broken to read. Pure: no I/O.

use jiff::Timestamp;
use mailparse::{MailHeaderMap, ParsedMail};

use super::{fields, prose, severity};

/// The largest message read (bigger ones are left and counted).
pub const MAX_BYTES: usize = 1024 * 1024;
/// The most multipart levels a message may nest.
const MAX_MULTIPARTS: usize = 16;
/// The most recipients read from one report.
const MAX_RECIPIENTS: usize = 100;

/// What a message in the bounce mailbox is.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A bounce or a complaint, to match to its message.
    Report(Report),
    /// An out-of-office or other automatic reply: never a bounce.
    AutoReply,
    /// Ordinary mail, a read receipt, anything that is not a report.
    NotABounce,
    /// It claims to be a report but cannot be read.
    Malformed(String),
}

/// A bounce or complaint.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The shape it came in, for logs and counts.
    pub format: Format,
    /// What happened to each recipient.
    pub recipients: Vec<Outcome>,
    /// The Message-ID of the message it reports on, where it quotes it.
    pub original_message_id: Option<String>,
    /// When it happened (Arrival-Date, else the report's Date).
    pub time: Option<Timestamp>,
    /// The report's own Message-ID.
    pub id: Option<String>,
}

/// The shapes mailroom reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 3464 `message/delivery-status`.
    Dsn,
    /// Text only, recipients in `X-Failed-Recipients`.
    FailedRecipientsHeader,
    /// RFC 5965 `message/feedback-report`.
    Arf,
    /// Text only, recipients named in the report's words: recorded only
    /// for recipients of the message it is tied to.
    Prose,
}

/// What a report says about one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The recipient, as the message addressed it where the report says
    /// (`Original-Recipient`), else as it was finally tried.
    pub address: Option<String>,
    /// What became of it.
    pub action: Action,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The receiving server's words.
    pub diagnostic: Option<String>,
    /// The report's own words, where they speak of this recipient alone.
    pub context: Option<String>,
}

/// A recipient's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not delivered, for good or after the retries ran out.
    Failed,
    /// Still being tried.
    Delayed,
    /// Delivered (or relayed where no further report will come).
    Delivered,
    /// Marked as spam (a feedback report).
    Complained,
}

impl Outcome {
    /// Whether a failure refuses the address for good (see `severity`).
    pub fn is_hard(&self) -> bool {
        if self
            .address
            .as_deref()
            .is_some_and(severity::filtering_domain)
        {
            return false;
        }
        severity::is_hard(
            self.status.as_deref().unwrap_or(""),
            self.diagnostic.as_deref(),
            self.context.as_deref(),
        )
    }
}

/// Reads one message of the mailbox.
pub fn read(raw: &[u8]) -> Verdict {
    if raw.len() > MAX_BYTES {
        return Verdict::Malformed(format!("larger than {MAX_BYTES} bytes"));
    }
    let nested = raw
        .windows(b"multipart/".len())
        .filter(|w| w.eq_ignore_ascii_case(b"multipart/"))
        .count();
    if nested > MAX_MULTIPARTS {
        return Verdict::Malformed(format!("more than {MAX_MULTIPARTS} multipart levels"));
    }
    let mail = match mailparse::parse_mail(raw) {
        Ok(mail) => mail,
        Err(e) => return Verdict::Malformed(format!("not a readable message: {e}")),
    };
    let id = mail.headers.get_first_value("Message-ID");
    let date = mail
        .headers
        .get_first_value("Date")
        .and_then(|d| mailparse::dateparse(&d).ok())
        .and_then(|s| Timestamp::from_second(s).ok());
    let with = |mut report: Report| {
        report.id = id.clone();
        report.time = report.time.or(date);
        Verdict::Report(report)
    };
    if let Some(part) = find_part(
        &mail,
        &["message/delivery-status", "message/global-delivery-status"],
    ) {
        return match dsn(&mail, part) {
            Ok(report) => with(report),
            Err(why) => Verdict::Malformed(why),
        };
    }
    if let Some(part) = find_part(&mail, &["message/feedback-report"]) {
        return match arf(&mail, part) {
            Ok(report) => with(report),
            Err(why) => Verdict::Malformed(why),
        };
    }
    if mail.ctype.mimetype.eq_ignore_ascii_case("multipart/report") {
        let kind = mail
            .ctype
            .params
            .get("report-type")
            .map(String::as_str)
            .unwrap_or("");
        if kind.eq_ignore_ascii_case("delivery-status")
            || kind.eq_ignore_ascii_case("feedback-report")
        {
            return Verdict::Malformed(format!("a {kind} report without its {kind} part"));
        }
        return Verdict::NotABounce;
    }
    if let Some(failed) = mail.headers.get_first_value("X-Failed-Recipients") {
        return match failed_recipients(&mail, &failed) {
            Ok(report) => with(report),
            Err(why) => Verdict::Malformed(why),
        };
    }
    let header = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
    let text = first_text(&mail);
    if prose::is_bounce(&header("From"), &header("Subject"), &text) {
        return match prose_report(&mail, &text) {
            Ok(report) => with(report),
            Err(why) => Verdict::Malformed(why),
        };
    }
    if is_auto_reply(&mail) {
        return Verdict::AutoReply;
    }
    Verdict::NotABounce
}

/// The first part (depth first) whose type is one of `types`.
fn find_part<'a>(mail: &'a ParsedMail<'a>, types: &[&str]) -> Option<&'a ParsedMail<'a>> {
    if types
        .iter()
        .any(|t| mail.ctype.mimetype.eq_ignore_ascii_case(t))
    {
        return Some(mail);
    }
    mail.subparts.iter().find_map(|p| find_part(p, types))
}

/// The Message-ID of the original the report quotes (`message/rfc822` or
/// `text/rfc822-headers`), else the report's `References`/`In-Reply-To`.
fn original_message_id(mail: &ParsedMail) -> Option<String> {
    let quoted = find_part(
        mail,
        &[
            "message/rfc822",
            "text/rfc822-headers",
            "message/global",
            "message/global-headers",
        ],
    )
    .and_then(|part| part.get_body_raw().ok())
    .and_then(|body| {
        mailparse::parse_headers(&body)
            .ok()
            .and_then(|(headers, _)| headers.get_first_value("Message-ID"))
    });
    quoted
        .or_else(|| mail.headers.get_first_value("In-Reply-To"))
        .or_else(|| mail.headers.get_first_value("References"))
}

fn dsn(mail: &ParsedMail, part: &ParsedMail) -> Result<Report, String> {
    let body = part
        .get_body()
        .map_err(|e| format!("the delivery-status part cannot be decoded: {e}"))?;
    let blocks = fields::blocks(&body);
    let Some((per_message, per_recipient)) = blocks.split_first() else {
        return Err("the delivery-status part is empty".into());
    };
    let arrival = fields::get(per_message, "Arrival-Date")
        .and_then(|d| mailparse::dateparse(d).ok())
        .and_then(|s| Timestamp::from_second(s).ok());
    // The report's own words speak of its recipient where it has one.
    let context = (per_recipient.len() == 1)
        .then(|| first_text(mail))
        .map(|t| {
            let words = prose::own_words(&t);
            words.chars().take(4096).collect::<String>()
        });
    let mut recipients = Vec::new();
    for block in per_recipient.iter().take(MAX_RECIPIENTS) {
        let action = match fields::get(block, "Action").map(|a| a.to_ascii_lowercase()) {
            Some(a) if a.starts_with("failed") => Action::Failed,
            Some(a) if a.starts_with("delayed") => Action::Delayed,
            Some(a)
                if ["delivered", "relayed", "expanded"]
                    .iter()
                    .any(|k| a.starts_with(k)) =>
            {
                Action::Delivered
            }
            Some(other) => return Err(format!("unknown Action {other:?}")),
            None => return Err("a recipient block without Action".into()),
        };
        let address = fields::get(block, "Original-Recipient")
            .or_else(|| fields::get(block, "Final-Recipient"))
            .and_then(fields::address_of);
        if address.is_none() {
            return Err("a recipient block without Final-Recipient".into());
        }
        let diagnostic = fields::get(block, "Diagnostic-Code").map(fields::diagnostic_text);
        let status =
            fields::get(block, "Status").map(|s| fields::refine_status(s, diagnostic.as_deref()));
        recipients.push(Outcome {
            address,
            action,
            status,
            diagnostic,
            context: context.clone(),
        });
    }
    if recipients.is_empty() {
        return Err("the delivery-status part names no recipient".into());
    }
    Ok(Report {
        format: Format::Dsn,
        recipients,
        original_message_id: original_message_id(mail),
        time: arrival,
        id: None,
    })
}

fn arf(mail: &ParsedMail, part: &ParsedMail) -> Result<Report, String> {
    let body = part
        .get_body()
        .map_err(|e| format!("the feedback-report part cannot be decoded: {e}"))?;
    let blocks = fields::blocks(&body);
    let fields = blocks.first().ok_or("the feedback-report part is empty")?;
    let kind =
        fields::get(fields, "Feedback-Type").ok_or("a feedback report without Feedback-Type")?;
    let address = fields::get(fields, "Original-Rcpt-To").and_then(fields::address_of);
    let arrival = fields::get(fields, "Arrival-Date")
        .or_else(|| fields::get(fields, "Received-Date"))
        .and_then(|d| mailparse::dateparse(d).ok())
        .and_then(|s| Timestamp::from_second(s).ok());
    Ok(Report {
        format: Format::Arf,
        recipients: vec![Outcome {
            address,
            action: Action::Complained,
            status: None,
            diagnostic: Some(format!("feedback report: {}", kind.to_ascii_lowercase())),
            context: None,
        }],
        original_message_id: original_message_id(mail),
        time: arrival,
        id: None,
    })
}

/// A text bounce: the recipients in `X-Failed-Recipients`, the reply in the
/// body (`SMTP error from remote mail server after RCPT TO:...: 550 ...`).
fn failed_recipients(mail: &ParsedMail, header: &str) -> Result<Report, String> {
    let text = first_text(mail);
    let lower = text.to_ascii_lowercase();
    let delayed = lower.contains("has not yet been delivered") || lower.contains("delayed");
    let diagnostic = fields::reply_in_text(&text);
    let temporary = lower.contains("temporary error") || lower.contains("retry timeout exceeded");
    let status = diagnostic
        .as_deref()
        .map(|d| fields::refine_status("", Some(d)))
        .filter(|s| !s.is_empty());
    let addresses: Vec<String> = header
        .split(',')
        .filter_map(fields::address_of)
        .take(MAX_RECIPIENTS)
        .collect();
    let context = (addresses.len() == 1).then(|| prose::own_words(&text).to_string());
    let recipients: Vec<Outcome> = addresses
        .into_iter()
        .map(|address| Outcome {
            address: Some(address),
            action: if delayed {
                Action::Delayed
            } else {
                Action::Failed
            },
            status: status
                .clone()
                .or_else(|| Some(if temporary { "4.0.0" } else { "5.0.0" }.into())),
            diagnostic: diagnostic.clone(),
            context: context.clone(),
        })
        .collect();
    if recipients.is_empty() {
        return Err("X-Failed-Recipients names no address".into());
    }
    let original = text
        .find("\nMessage-ID:")
        .or_else(|| text.find("\nMessage-Id:"))
        .and_then(|at| text[at + 1..].lines().next())
        .and_then(|line| line.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    Ok(Report {
        format: Format::FailedRecipientsHeader,
        recipients,
        original_message_id: original.or_else(|| original_message_id(mail)),
        time: None,
        id: None,
    })
}

/// The first text part (depth first; the message itself when it is one),
/// decoded; HTML is read as its text.
fn first_text(mail: &ParsedMail) -> String {
    fn find<'a>(mail: &'a ParsedMail<'a>, kind: &str) -> Option<&'a ParsedMail<'a>> {
        if mail.ctype.mimetype.eq_ignore_ascii_case(kind) {
            return Some(mail);
        }
        let quoted = mail
            .ctype
            .mimetype
            .to_ascii_lowercase()
            .starts_with("message/");
        if quoted {
            return None;
        }
        mail.subparts.iter().find_map(|p| find(p, kind))
    }
    if let Some(plain) = find(mail, "text/plain").and_then(|p| p.get_body().ok()) {
        return plain;
    }
    find(mail, "text/html")
        .and_then(|p| p.get_body().ok())
        .map(|html| html_text(&html))
        .unwrap_or_default()
}

/// The text of an HTML body: tags dropped, a line break for each block.
fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push('\n');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// A text-only bounce: its candidates (see `prose`), each failed (or
/// delayed, where the report says so), with the status its words give.
fn prose_report(mail: &ParsedMail, text: &str) -> Result<Report, String> {
    let words = prose::own_words(text);
    let delayed = prose::is_delay(words);
    let candidates = prose::candidates(words);
    if candidates.is_empty() {
        return Err("it looks like a bounce but names no recipient".into());
    }
    let alone = candidates.len() == 1;
    let recipients = candidates
        .into_iter()
        .take(MAX_RECIPIENTS)
        .map(|(address, diagnostic)| {
            let found = fields::refine_status("", Some(&diagnostic));
            // A report that gave up says so; its words decide how.
            let status = match (found.is_empty(), delayed) {
                (false, _) => found,
                (true, true) => "4.0.0".to_string(),
                (true, false) => "5.0.0".to_string(),
            };
            Outcome {
                address: Some(address),
                action: if delayed {
                    Action::Delayed
                } else {
                    Action::Failed
                },
                status: Some(status),
                diagnostic: (!diagnostic.is_empty()).then_some(diagnostic),
                context: alone.then(|| words.chars().take(4096).collect()),
            }
        })
        .collect();
    Ok(Report {
        format: Format::Prose,
        recipients,
        original_message_id: original_message_id(mail),
        time: None,
        id: None,
    })
}

/// RFC 3834 and the headers common auto-responders add.
fn is_auto_reply(mail: &ParsedMail) -> bool {
    let header = |name: &str| {
        mail.headers
            .get_first_value(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if header("Auto-Submitted").is_some_and(|v| v != "no")
        || header("X-Autoreply").is_some()
        || header("X-Autorespond").is_some()
        || header("Precedence").is_some_and(|v| v == "auto_reply")
    {
        return true;
    }
    let subject = header("Subject").unwrap_or_default();
    [
        "out of office",
        "automatic reply",
        "auto:",
        "autoreply",
        "auto-reply",
        "vacation",
    ]
    .iter()
    .any(|p| subject.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = "bounces+abc@mailroom.dev";
    const RECIPIENT: &str = "gone@example.org";
    const MESSAGE_ID: &str = "<0123456789abcdef0123456789abcdef@mailroom.dev>";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/bounces/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .expect("fixture")
            .replace("{{ENVELOPE}}", ENVELOPE)
            .replace("{{RECIPIENT}}", RECIPIENT)
            .replace("{{MESSAGE_ID}}", MESSAGE_ID)
            .replace("{{BOUNCES}}", "bounces@mailroom.dev")
            .replace("{{REPORT_ID}}", "r1")
            .replace('\n', "\r\n")
            .into_bytes()
    }

    fn report(name: &str) -> Report {
        match read(&fixture(name)) {
            Verdict::Report(r) => r,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn hard_bounces_of_every_server_read_alike() {
        for (name, format, status) in [
            ("postfix.eml", Format::Dsn, "5.1.1"),
            ("exim.eml", Format::Dsn, "5.1.1"),
            ("exim-text.eml", Format::FailedRecipientsHeader, "5.1.1"),
            ("office365.eml", Format::Dsn, "5.1.10"),
            ("gmail.eml", Format::Dsn, "5.1.1"),
        ] {
            let r = report(name);
            assert_eq!(r.format, format, "{name}");
            assert_eq!(r.recipients.len(), 1, "{name}");
            let outcome = &r.recipients[0];
            assert_eq!(outcome.address.as_deref(), Some(RECIPIENT), "{name}");
            assert_eq!(outcome.action, Action::Failed, "{name}");
            assert_eq!(outcome.status.as_deref(), Some(status), "{name}");
            assert!(outcome.is_hard(), "{name}");
            assert!(
                outcome
                    .diagnostic
                    .as_deref()
                    .is_some_and(|d| d.contains("5.1.1") || d.contains("5.1.10")),
                "{name}: {outcome:?}"
            );
            assert_eq!(r.original_message_id.as_deref(), Some(MESSAGE_ID), "{name}");
        }
    }

    #[test]
    fn delays_full_mailboxes_and_complaints_are_not_hard_bounces() {
        let delayed = report("postfix-delayed.eml");
        assert_eq!(delayed.recipients[0].action, Action::Delayed);
        let full = report("postfix-mailbox-full.eml");
        assert_eq!(full.recipients[0].action, Action::Failed);
        assert!(!full.recipients[0].is_hard(), "5.2.2 is soft");
        let arf = report("arf.eml");
        assert_eq!(arf.format, Format::Arf);
        assert_eq!(arf.recipients[0].action, Action::Complained);
        assert_eq!(arf.recipients[0].address.as_deref(), Some(RECIPIENT));
    }

    #[test]
    fn auto_replies_broken_reports_and_ordinary_mail_are_told_apart() {
        assert_eq!(read(&fixture("out-of-office.eml")), Verdict::AutoReply);
        assert!(matches!(
            read(&fixture("malformed.eml")),
            Verdict::Malformed(_)
        ));
        let plain = b"From: a@b.c\r\nTo: d@e.f\r\nSubject: hello\r\n\r\nhi\r\n";
        assert_eq!(read(plain), Verdict::NotABounce);
        let nested = "Content-Type: multipart/mixed; boundary=x\r\n\r\n".repeat(40);
        assert!(matches!(read(nested.as_bytes()), Verdict::Malformed(_)));
    }
}
