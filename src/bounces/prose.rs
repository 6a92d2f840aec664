//! Text-only bounces: reports with no delivery-status part and no
//! `X-Failed-Recipients`, that name their recipients only in prose (qmail,
//! Yahoo, OpenSMTPD, GMX, Zoho, Exchange 2003, Domino, Gmail's delay
//! notices, ...). Every address in the report's own words (before the copy
//! of the original) is a candidate, with the words that follow it up to the
//! next candidate as its diagnostic. Candidates are only recorded where
//! they are recipients of the message the report is tied to (the reader
//! checks that), so a stray address in the prose names nobody. Pure.

use super::fields;

/// The most candidates read from one report.
const MAX_CANDIDATES: usize = 100;
/// The most of the words after an address kept as its diagnostic.
const MAX_DIAGNOSTIC: usize = 600;
/// The most of the report's own words read.
const MAX_TEXT: usize = 64 * 1024;

/// Phrases that open the copy of the original, where the report's own
/// words end.
const COPY_PHRASES: &[&str] = &[
    "below this line is a copy",
    "below is a copy",
    "copy of the original message",
    "this is a copy of the message",
    "original message follows",
    "----- original message",
    "--- original message",
];

/// Header names whose line starts the copy's headers.
const COPY_HEADERS: &[&str] = &["return-path:", "received:"];

/// Words in a subject that bounces use.
const SUBJECT_WORDS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "failure notice",
    "returned mail",
    "mail delivery",
    "non-delivery",
    "not delivered",
    "delivery delayed",
    "delayed mail",
    "could not be delivered",
];

/// Words in a sender that bounces come from.
const SENDER_WORDS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "mail delivery",
    "system administrator",
    "mail administrator",
];

/// Words in the report that say it is one.
const BODY_WORDS: &[&str] = &[
    "could not be delivered",
    "was not delivered",
    "wasn't able to deliver",
    "unable to deliver",
    "did not reach",
    "delivery to the following",
    "error has occurred while attempting to deliver",
    "permanent error",
    "delivery has failed",
    "not be delivered",
];

/// Words that say delivery is still being tried.
const DELAY_WORDS: &[&str] = &[
    "has been delayed",
    "delivery delayed",
    "not yet been delivered",
    "will retry",
    "will continue to try",
    "still trying",
    "will keep trying",
];

/// Whether a message with this `from` and `subject` and these words is a
/// bounce: a bounce's subject, and a bounce's sender or words.
pub fn is_bounce(from: &str, subject: &str, text: &str) -> bool {
    let (from, subject) = (from.to_ascii_lowercase(), subject.to_ascii_lowercase());
    let words = text.to_ascii_lowercase();
    SUBJECT_WORDS.iter().any(|w| subject.contains(w))
        && (SENDER_WORDS.iter().any(|w| from.contains(w))
            || BODY_WORDS.iter().any(|w| words.contains(w)))
}

/// The report's own words: `text` up to the copy of the original.
pub fn own_words(text: &str) -> &str {
    let text = &text[..floor(text, MAX_TEXT)];
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let lower = line.trim().to_ascii_lowercase();
        if COPY_PHRASES.iter().any(|p| lower.contains(p))
            || COPY_HEADERS.iter().any(|h| lower.starts_with(h))
        {
            return &text[..at];
        }
        at += line.len();
    }
    text
}

/// The largest char boundary at most `max`.
fn floor(text: &str, max: usize) -> usize {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Whether the report says delivery is still being tried.
pub fn is_delay(words: &str) -> bool {
    let lower = words.to_ascii_lowercase();
    DELAY_WORDS.iter().any(|w| lower.contains(w))
}

/// Every address in `words` (lower-cased, each once, in order) with the
/// words after it up to the next other address, on one line and bounded.
pub fn candidates(words: &str) -> Vec<(String, String)> {
    let separators = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | '"' | '\''
            )
    };
    let mut found: Vec<(String, usize, usize)> = Vec::new();
    let mut offset = 0;
    for token in words.split_inclusive(separators) {
        let start = offset;
        offset += token.len();
        let bare = token
            .trim_matches(separators)
            .trim_end_matches([':', '.'])
            .trim_start_matches("mailto:");
        if !bare.contains('@') {
            continue;
        }
        let Some(address) = fields::address_of(bare) else {
            continue;
        };
        let address = address.to_ascii_lowercase();
        if found.last().is_some_and(|(last, _, _)| *last == address) {
            continue;
        }
        found.push((address, start, offset));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, (address, _, end)) in found.iter().enumerate() {
        let next = found[i + 1..]
            .iter()
            .find(|(other, _, _)| other != address)
            .map_or(words.len(), |(_, start, _)| *start);
        let after = words.get(*end..next.max(*end)).unwrap_or_default();
        // Enough of the words for the diagnostic, before joining them.
        let after = &after[..floor(after, MAX_DIAGNOSTIC * 4)];
        let diagnostic: String = after
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches([':', '.', ' '])
            .chars()
            .take(MAX_DIAGNOSTIC)
            .collect();
        if let Some((_, known)) = out.iter_mut().find(|(a, _)| a == address) {
            if known.is_empty() {
                *known = diagnostic;
            }
        } else if out.len() < MAX_CANDIDATES {
            out.push((address.clone(), diagnostic));
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_the_words_after_it() {
        let qmail = "Hi. This is the qmail-send program at mx.example.jp.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up.\n\n<a@example.org>:\nremote host said: 550 Unknown user a@example.org\n. (#5.5.0)\n\n<b@example.org>:\n452 mailbox full\n\n--- Below this line is a copy of the message.\n\nReturn-Path: <c@example.net>\nTo: a@example.org\n";
        let words = own_words(qmail);
        assert!(!words.contains("c@example.net"), "the copy is cut: {words}");
        let found = candidates(words);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, "a@example.org");
        assert!(found[0].1.contains("550 Unknown user"), "{:?}", found[0]);
        assert!(found[0].1.contains("#5.5.0"), "{:?}", found[0]);
        assert_eq!(
            found[1],
            ("b@example.org".into(), "452 mailbox full".into())
        );
        assert!(is_bounce(
            "MAILER-DAEMON@mx.example.jp",
            "failure notice",
            words
        ));
        assert!(!is_bounce(
            "alice@example.org",
            "lunch?",
            "could not be delivered"
        ));
        assert!(is_delay(
            "Delivery to the following recipient has been delayed."
        ));
    }
}
