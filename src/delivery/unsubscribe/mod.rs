//! Hosted one-click unsubscribe: the sealed token in each recipient's URL
//! (`token`), the keys it is sealed with, read from a Secret (`keys`), and
//! what recording an unsubscribe writes (an EmailSuppression with reason
//! Unsubscribed for the list, in `super::suppress`). The HTTP endpoint is
//! the webhook receiver's (`webhook::unsubscribe`); the mailto form is read
//! by the bounce mailbox.

pub mod keys;
pub mod token;

/// The path of a hosted unsubscribe URL under its base URL.
pub fn path(namespace: &str, list: &str, token: &str) -> String {
    format!("/unsubscribe/{namespace}/{list}/{token}")
}

/// The subject of a hosted unsubscribe mail: what the mailto link asks a
/// client to send, and what the bounce mailbox looks for.
pub fn subject(namespace: &str, list: &str, token: &str) -> String {
    format!("unsubscribe {namespace}.{list}.{token}")
}

/// The namespace, list and token a mail's subject names, if it is a
/// hosted unsubscribe mail (a reply's `Re:` and the like before it are
/// allowed).
pub fn parse_subject(subject: &str) -> Option<(&str, &str, &str)> {
    let at = subject.to_ascii_lowercase().rfind("unsubscribe ")?;
    let rest = subject.get(at + "unsubscribe ".len()..)?.trim();
    let mut parts = rest.splitn(3, '.');
    let (namespace, list, token) = (parts.next()?, parts.next()?, parts.next()?);
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let token_chars = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (label(namespace) && label(list) && token_chars && !token.is_empty())
        .then_some((namespace, list, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_names_its_namespace_list_and_token_through_a_reply() {
        let subject = subject("shop", "news", "AbC-_9");
        assert_eq!(parse_subject(&subject), Some(("shop", "news", "AbC-_9")));
        assert_eq!(
            parse_subject("Re: Unsubscribe shop.news.AbC"),
            Some(("shop", "news", "AbC"))
        );
        assert_eq!(parse_subject("unsubscribe me please"), None);
        assert_eq!(parse_subject("unsubscribe Shop.news.x"), None);
        assert_eq!(parse_subject("unsubscribe shop.news.a b"), None);
        assert_eq!(parse_subject("Delivery Status Notification"), None);
    }
}
