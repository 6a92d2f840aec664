//! The envelope sender that names a message: `local+<token>@domain`, the
//! token 39 base32 characters holding the message's identity, the bulk
//! recipient's index and an HMAC tag with the provider's key. Bounces go to
//! the envelope sender, so the token comes back with each one even when the
//! bounce quotes nothing of the message; nobody without the key can make a
//! token that passes (a forged bounce cannot bounce someone else's mail).

use data_encoding::BASE32_NOPAD;
use ring::hmac;

use crate::api::ProviderId;
use crate::ledger::Identity;

/// Characters of a token.
pub const TOKEN_CHARS: usize = 39;
/// Bytes of identity, recipient and tag.
const IDENTITY_BYTES: usize = 16;
const RECIPIENT_BYTES: usize = 2;
const TAG_BYTES: usize = 6;

/// The provider's token key: from the mailbox Secret's `tokenKey`, or
/// derived from its password, and bound to the provider, so two providers
/// that share a mailbox (or a Secret) never accept each other's tokens.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// The key of `provider`, from the Secret's `tokenKey` when set, else
    /// from its password.
    pub fn derive(token_key: Option<&[u8]>, password: &[u8], provider: &ProviderId) -> Self {
        let material = match token_key {
            Some(key) => key.to_vec(),
            None => {
                let base = hmac::Key::new(hmac::HMAC_SHA256, password);
                hmac::sign(&base, b"mailroom bounce token key/1")
                    .as_ref()
                    .to_vec()
            }
        };
        let outer = hmac::Key::new(hmac::HMAC_SHA256, &material);
        let bound = hmac::sign(&outer, format!("provider\0{provider}").as_bytes());
        Self(hmac::Key::new(hmac::HMAC_SHA256, bound.as_ref()))
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_BYTES] {
        let full = hmac::sign(&self.0, payload);
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
        tag
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The message's identity.
    pub identity: Identity,
    /// The index in `spec.recipients`, for one email of a bulk message.
    pub recipient: Option<u32>,
}

/// The token for a message's identity (and bulk recipient).
pub fn make(key: &TokenKey, identity: &Identity, recipient: Option<u32>) -> Option<String> {
    let mut payload = hex::decode(identity.as_str()).ok()?;
    let index = match recipient {
        None => 0u16,
        Some(i) => u16::try_from(i).ok()?.checked_add(1)?,
    };
    payload.extend_from_slice(&index.to_be_bytes());
    let tag = key.tag(&payload);
    payload.extend_from_slice(&tag);
    Some(BASE32_NOPAD.encode(&payload).to_ascii_lowercase())
}

/// Reads `token` (any case); `None` unless its tag is `key`'s.
pub fn read(key: &TokenKey, token: &str) -> Option<Token> {
    if token.len() != TOKEN_CHARS {
        return None;
    }
    let bytes = BASE32_NOPAD
        .decode(token.to_ascii_uppercase().as_bytes())
        .ok()?;
    if bytes.len() != IDENTITY_BYTES + RECIPIENT_BYTES + TAG_BYTES {
        return None;
    }
    let (payload, tag) = bytes.split_at(IDENTITY_BYTES + RECIPIENT_BYTES);
    let expected = key.tag(payload);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
        return None;
    }
    let identity = Identity::parse(&hex::encode(&payload[..IDENTITY_BYTES]))?;
    let index = u16::from_be_bytes([payload[IDENTITY_BYTES], payload[IDENTITY_BYTES + 1]]);
    Some(Token {
        identity,
        recipient: index.checked_sub(1).map(u32::from),
    })
}

/// The bounce address split in two, to build and find envelope senders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceAddress {
    local: String,
    domain: String,
}

impl BounceAddress {
    /// Splits `local@domain`; `None` without an `@`.
    pub fn parse(address: &str) -> Option<Self> {
        let (local, domain) = address.rsplit_once('@')?;
        (!local.is_empty() && !domain.is_empty()).then(|| Self {
            local: local.to_string(),
            domain: domain.to_string(),
        })
    }

    /// The envelope sender carrying `token`.
    pub fn with_token(&self, token: &str) -> String {
        format!("{}+{token}@{}", self.local, self.domain)
    }

    /// The address itself, without a token.
    pub fn plain(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// Every token-shaped `local+<token>@domain` in `text`, at most `limit`
    /// (case-insensitive; the tags are checked by [`read`]).
    pub fn tokens_in(&self, text: &str, limit: usize) -> Vec<String> {
        let lower = text.to_ascii_lowercase();
        let prefix = format!("{}+", self.local.to_ascii_lowercase());
        let suffix = format!("@{}", self.domain.to_ascii_lowercase());
        let mut found: Vec<String> = Vec::new();
        let mut from = 0;
        while let Some(at) = lower[from..].find(&prefix) {
            let start = from + at + prefix.len();
            from = start;
            let Some(candidate) = lower.get(start..start + TOKEN_CHARS) else {
                break;
            };
            let bounded = lower[start + TOKEN_CHARS..].starts_with(&suffix);
            let before_ok = start - prefix.len() == 0
                || !lower.as_bytes()[start - prefix.len() - 1].is_ascii_alphanumeric();
            if bounded
                && before_ok
                && candidate
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
                && !found.iter().any(|f| f == candidate)
            {
                found.push(candidate.to_string());
                if found.len() >= limit {
                    break;
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> ProviderId {
        ProviderId::Namespaced {
            namespace: "team".into(),
            name: name.into(),
        }
    }

    fn identity() -> Identity {
        Identity::parse("0123456789abcdef0123456789abcdef").expect("identity")
    }

    #[test]
    fn a_token_reads_back_with_its_key_only() {
        let key = TokenKey::derive(None, b"secret", &provider("relay"));
        let token = make(&key, &identity(), None).expect("token");
        assert_eq!(token.len(), TOKEN_CHARS);
        let read_back = read(&key, &token.to_ascii_uppercase()).expect("valid");
        assert_eq!(read_back.identity, identity());
        assert_eq!(read_back.recipient, None);
        let other = TokenKey::derive(None, b"secret", &provider("other"));
        assert_eq!(read(&other, &token), None, "another provider's key");
        let explicit = TokenKey::derive(Some(b"0123456789abcdef"), b"secret", &provider("relay"));
        assert_eq!(read(&explicit, &token), None, "another key material");
    }

    #[test]
    fn a_changed_character_fails_the_tag() {
        let key = TokenKey::derive(None, b"secret", &provider("relay"));
        let token = make(&key, &identity(), Some(41)).expect("token");
        assert_eq!(read(&key, &token).and_then(|t| t.recipient), Some(41));
        let mut bytes = token.into_bytes();
        bytes[3] = if bytes[3] == b'a' { b'b' } else { b'a' };
        let forged = String::from_utf8(bytes).expect("ascii");
        assert_eq!(read(&key, &forged), None);
    }

    #[test]
    fn tokens_are_found_in_any_header_or_body_and_fit_a_local_part() {
        let address = BounceAddress::parse("bounces@example.com").expect("address");
        let key = TokenKey::derive(None, b"pw", &provider("relay"));
        let token = make(&key, &identity(), None).expect("token");
        let envelope = address.with_token(&token);
        assert!(envelope.split('@').next().expect("local").len() <= 64);
        let text = format!(
            "To: <{}>\r\nX-Other: xbounces+{token}@example.com\r\n\r\nReturn-path: <{envelope}>",
            envelope.to_ascii_uppercase()
        );
        assert_eq!(address.tokens_in(&text, 8), vec![token]);
        assert!(address.tokens_in("bounces+short@example.com", 8).is_empty());
    }
}
