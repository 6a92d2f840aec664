//! Whether a failed delivery is a hard bounce: the recipient's address is
//! refused for good (no such user or domain, moved, a domain that takes no
//! mail). Everything else is soft, and never suppresses an address at once:
//! a refusal of the sender or the message (SPF, DMARC, a blocklisted IP,
//! policy, size, content, a reply after DATA), of the moment (rate limits,
//! network and DNS faults, timeouts) or of the mailbox's state (full,
//! disabled), and a local delivery agent's failure. Decided from the status
//! code, the server's words and the report's own words, in the manner of
//! Sisimai's reasons (userunknown, hostunknown, hasmoved, notaccept are its
//! hard ones). Pure.

/// Words that make a failure soft whatever its code: the refusal is of the
/// sender, the message, the moment or the mailbox's state.
const SOFT_WORDS: &[&str] = &[
    // the mailbox's state
    "mailbox full",
    "mailbox is full",
    "over quota",
    "quota exceeded",
    "quotaexceeded",
    "exceeded storage",
    "disk space",
    "insufficient storage",
    "disabled",
    "suspended",
    // the message
    "too large",
    "size exceeds",
    "message size",
    "8-bit",
    "8bit",
    "header error",
    "from: header",
    "content",
    "virus",
    // the sender
    "spf",
    "dmarc",
    "dkim",
    "sender address",
    "domain of sender",
    "sender domain",
    "not allowed to send",
    "purported responsible",
    "reverse dns",
    "ptr record",
    "ip name lookup",
    "blacklist",
    "blocklist",
    "blocked",
    "banned",
    "spamhaus",
    "spam",
    "policy",
    "relay access denied",
    "relaying denied",
    "not permitted to relay",
    // the moment
    "rate limit",
    "too many",
    "timed out",
    "connection refused",
    "temporarily",
    "try again later",
    "greylist",
    "name server reply",
    // the local delivery agent
    "command output",
    "command died",
    "procmail",
    "couldn't create",
    "mailer error",
];

/// Words that say the refusal came after the recipient was taken (in
/// reply to DATA): a filter's, not the address's, unless the code says so.
const AFTER_DATA_WORDS: &[&str] = &["end of data", ">>> data", "after data"];

/// Recipient domains whose servers answer "user unknown" when their own
/// filters refuse the mail (Japanese mobile carriers, as Sisimai knows them).
const FILTERING_DOMAINS: &[&str] = &[
    "ezweb.ne.jp",
    "au.com",
    "docomo.ne.jp",
    "softbank.ne.jp",
    "i.softbank.jp",
    "disney.ne.jp",
    "vodafone.ne.jp",
];

/// Words that say the address itself is refused.
const ADDRESS_WORDS: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "user not found",
    "no such recipient",
    "unknown recipient",
    "recipnotfound",
    "recipientnotfound",
    "address rejected",
    "does not exist",
    "doesn't exist",
    "no longer on server",
    "has moved",
    "no mailbox",
    "mailbox not found",
    "invalid recipient",
    "invalid mailbox",
    "not a valid mailbox",
    "addressee unknown",
    "unrouteable address",
    "not listed in",
    "host not found",
    "illegal host",
    "no mx record",
    "domain name not found",
    "no such domain",
    "domain is not reachable",
    "does not accept mail",
    "not our customer",
    // Lotus Notes in Japanese: "not in the directory's list"
    "ディレクトリのリストにありません",
];

/// Enhanced status codes that refuse the address on their own (RFC 3463:
/// bad mailbox, bad system, bad syntax, moved; 5.1.10, a recipient address
/// with a null MX or not found, as Microsoft 365 writes it).
const ADDRESS_CODES: &[(u16, u16)] = &[(1, 1), (1, 2), (1, 3), (1, 6), (1, 10)];

/// Codes too general to tell, where the words decide: other address
/// status, mailbox disabled (some servers write 5.2.1 for an unknown user),
/// bad destination or routing (5.4.1 is Microsoft 365's "recipient address
/// rejected", 5.4.4 a host not found), protocol (5.5.0, qmail's and
/// others' "no mailbox here").
const WORDS_DECIDE: &[(u16, u16)] = &[(0, 0), (1, 0), (2, 1), (4, 1), (4, 4), (5, 0)];

/// The subject and detail of an enhanced status code `5.s.d`.
fn subject_detail(status: &str) -> Option<(u16, u16)> {
    let mut parts = status.trim().splitn(3, '.');
    let _class = parts.next()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    Some((subject, detail))
}

fn has(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Whether a failure with enhanced `status` (maybe empty), the server's
/// `diagnostic` and the report's own words `context` (only where they speak
/// of this recipient alone) refuses the address for good.
pub fn is_hard(status: &str, diagnostic: Option<&str>, context: Option<&str>) -> bool {
    let words = format!(
        "{}\n{}",
        diagnostic.unwrap_or_default(),
        context.unwrap_or_default()
    )
    .to_ascii_lowercase();
    let permanent = if status.is_empty() {
        diagnostic
            .map(super::fields::reply_code)
            .is_some_and(|code| code.starts_with('5'))
    } else {
        status.starts_with('5')
    };
    if !permanent || has(&words, SOFT_WORDS) {
        return false;
    }
    match subject_detail(status) {
        Some(code) if ADDRESS_CODES.contains(&code) => true,
        Some(code) if !WORDS_DECIDE.contains(&code) => false,
        _ => !has(&words, AFTER_DATA_WORDS) && has(&words, ADDRESS_WORDS),
    }
}

/// Whether `address` is at a domain whose "user unknown" may be its
/// filter's: such a refusal is judged soft.
pub fn filtering_domain(address: &str) -> bool {
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    FILTERING_DOMAINS
        .iter()
        .any(|f| domain == *f || domain.ends_with(&format!(".{f}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_refused_is_hard_and_everything_else_soft() {
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            ("5.1.1", "550 5.1.1 <a@b>... User Unknown", None, true),
            (
                "5.1.10",
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
                None,
                true,
            ),
            (
                "5.1.6",
                "550 5.1.6 recipient no longer on server",
                None,
                true,
            ),
            ("5.4.4", "Host or domain name not found", None, true),
            (
                "5.4.1",
                "550 5.4.1 Recipient address rejected: Access denied",
                None,
                true,
            ),
            ("5.2.1", "550 5.2.1 <a@b>... User Unknown", None, true),
            ("", "550 sorry, no mailbox here by that name", None, true),
            // the mailbox's state, the sender, the message, the moment
            ("5.2.2", "550 5.2.2 Mailbox Full", None, false),
            (
                "5.1.1",
                "550 5.1.1 User Unknown",
                Some("Not enough disk space"),
                false,
            ),
            (
                "5.2.1",
                "550 5.2.1 The email account that you tried to reach is disabled",
                None,
                false,
            ),
            (
                "5.1.8",
                "553 5.1.8 Domain of sender address x does not exist",
                None,
                false,
            ),
            (
                "5.1.0",
                "550 5.1.0 not allowed to send from <x> per its SPF Record",
                None,
                false,
            ),
            (
                "5.7.606",
                "550 5.7.606 Access denied, banned sending IP",
                None,
                false,
            ),
            (
                "5.4.4",
                "Name service error: Malformed or unexpected name server reply",
                None,
                false,
            ),
            (
                "5.0.0",
                "550 Unknown user a@b",
                Some("(in reply to end of DATA command)"),
                false,
            ),
            (
                "5.1.1",
                "procmail: Couldn't create \"/var/spool/mail/x\": No such user",
                None,
                false,
            ),
            (
                "5.1.351",
                "550 5.1.351 unknown recipient or mailbox unavailable",
                None,
                false,
            ),
            ("5.3.0", "550-'Unknown user x@y'", None, false),
            ("4.2.2", "452 4.2.2 Mailbox full", None, false),
            ("4.1.1", "450 4.1.1 User unknown (for now)", None, false),
            ("5.7.1", "554 5.7.1 Relay access denied", None, false),
            ("", "no reply at all", None, false),
        ];
        for (status, diagnostic, context, hard) in cases {
            assert_eq!(
                is_hard(status, Some(diagnostic), *context),
                *hard,
                "{status} {diagnostic} {context:?}"
            );
        }
    }
}
