//! The field syntax of delivery-status and feedback reports (RFC 3464 §2.1,
//! RFC 5965 §3.5): blocks of `Name: value` lines separated by blank lines,
//! continuation lines folded in; and the small readings made of them
//! (an address out of `rfc822; a@b`, the enhanced status in a reply).

/// The most characters kept of a diagnostic.
const MAX_DIAGNOSTIC: usize = 512;

/// One block: its fields in order.
pub type Block = Vec<(String, String)>;

/// The blocks of `text`, continuation lines unfolded.
pub fn blocks(text: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut current: Block = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// The first value of field `name` (any case).
pub fn get<'a>(block: &'a Block, name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The address in `rfc822; a@b`, `<a@b>` or `a@b`; `None` without an `@`.
pub fn address_of(value: &str) -> Option<String> {
    let value = match value.split_once(';') {
        Some((kind, rest)) if !kind.contains('@') => rest,
        _ => value,
    };
    let address = value
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let valid = address.contains('@')
        && address.len() <= 254
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    valid.then(|| address.to_string())
}

/// A diagnostic without its type (`smtp; `), on one line, bounded.
pub fn diagnostic_text(value: &str) -> String {
    let text = match value.split_once(';') {
        Some((kind, rest))
            if kind
                .trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            rest
        }
        _ => value,
    };
    let single: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    single.chars().take(MAX_DIAGNOSTIC).collect()
}

/// The reply code a diagnostic starts with (`550`), or "".
pub fn reply_code(diagnostic: &str) -> &str {
    let code = diagnostic.trim_start().get(..3).unwrap_or("");
    if code.bytes().all(|b| b.is_ascii_digit()) {
        code
    } else {
        ""
    }
}

/// The first enhanced status code (`5.1.1`) in `text`.
fn enhanced_code(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !matches!(b, b'2' | b'4' | b'5') || bytes.get(i + 1) != Some(&b'.') {
            continue;
        }
        if i > 0 && (bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.') {
            continue;
        }
        let rest = &text[i + 2..];
        let subject: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if subject.is_empty() || subject.len() > 3 {
            continue;
        }
        let after = &rest[subject.len()..];
        let Some(after) = after.strip_prefix('.') else {
            continue;
        };
        let detail: String = after.chars().take_while(char::is_ascii_digit).collect();
        if detail.is_empty() || detail.len() > 3 {
            continue;
        }
        return Some(format!("{}.{subject}.{detail}", b as char));
    }
    None
}

/// The status to record: the report's own (`5.1.1`, comments dropped), or
/// the diagnostic's when the report gives only a class (`5.0.0`, as Exim
/// writes) or none.
pub fn refine_status(status: &str, diagnostic: Option<&str>) -> String {
    let own = enhanced_code(status);
    let generic = own.as_deref().is_none_or(|s| s.ends_with(".0.0"));
    if generic && let Some(better) = diagnostic.and_then(enhanced_code) {
        return better;
    }
    own.unwrap_or_default()
}

/// The server's reply quoted in a text bounce: the line after Exim's
/// `SMTP error from remote mail server after ...:`, else the first line that
/// starts with a 4xx or 5xx code.
pub fn reply_in_text(text: &str) -> Option<String> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line
            .to_ascii_lowercase()
            .starts_with("smtp error from remote mail server")
            && let Some(reply) = lines.find(|l| !l.is_empty())
        {
            return Some(diagnostic_text(reply));
        }
    }
    text.lines()
        .map(str::trim)
        .find(|l| matches!(reply_code(l).as_bytes().first(), Some(b'4' | b'5')))
        .map(diagnostic_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_unfold_and_split() {
        let text = "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; a@b\r\nDiagnostic-Code: smtp; 550-5.1.1 no\r\n 550 5.1.1 such user\r\n\r\n";
        let blocks = blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            get(&blocks[1], "diagnostic-code"),
            Some("smtp; 550-5.1.1 no 550 5.1.1 such user")
        );
    }

    #[test]
    fn addresses_statuses_and_diagnostics_read_as_servers_write_them() {
        assert_eq!(
            address_of("rfc822; Bo@Example.org").as_deref(),
            Some("Bo@Example.org")
        );
        assert_eq!(address_of("rfc822;<a@b.c>").as_deref(), Some("a@b.c"));
        assert_eq!(address_of("rfc822; not an address"), None);
        assert_eq!(refine_status("5.0.0", Some("550 5.7.1 spam")), "5.7.1");
        assert_eq!(refine_status("5.1.10", Some("550 5.1.1 x")), "5.1.10");
        assert_eq!(
            refine_status("5.1.1 (bad destination mailbox)", None),
            "5.1.1"
        );
        assert_eq!(
            diagnostic_text("smtp; 550  user\n unknown"),
            "550 user unknown"
        );
        assert_eq!(reply_code("451 later"), "451");
        assert_eq!(
            reply_in_text("x\n    SMTP error from remote mail server after RCPT TO:<a@b>:\n    550 5.1.1 User unknown\n").as_deref(),
            Some("550 5.1.1 User unknown")
        );
    }
}
