//! The token in a hosted unsubscribe URL: the recipient's address sealed
//! with ChaCha20-Poly1305 under a key from the controller's unsubscribe
//! Secret, the namespace and list bound to it as associated data. The nonce
//! is an HMAC of namespace, list and address (a synthetic IV), so one
//! recipient on one list always gets the same token, and opening a token
//! checks that too. Nobody without the key can make a token that opens, read
//! the address in one, or move one to another namespace or list.

use data_encoding::BASE64URL_NOPAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;

/// Bytes naming the key a token was sealed with.
const ID_BYTES: usize = 4;
/// Bytes of the nonce.
const NONCE_BYTES: usize = 12;
/// Bytes of the authentication tag.
const TAG_BYTES: usize = 16;
/// The shortest key material taken.
pub const MIN_KEY_BYTES: usize = 32;
/// The longest address sealed.
const MAX_ADDRESS_BYTES: usize = 254;
/// The longest token that can open (4 + 12 + 254 + 16 bytes, base64url).
pub const MAX_TOKEN_CHARS: usize = 384;

/// One unsubscribe key, from the Secret's key material.
pub struct SealKey {
    id: [u8; ID_BYTES],
    seal: LessSafeKey,
    nonce: hmac::Key,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", hex::encode(self.id))
    }
}

/// Why key material was refused.
#[derive(Debug, thiserror::Error)]
#[error("an unsubscribe key must be at least {MIN_KEY_BYTES} bytes (it has {0})")]
pub struct ShortKey(pub usize);

impl SealKey {
    /// The key made from `material` (random bytes, at least 32).
    pub fn new(material: &[u8]) -> Result<Self, ShortKey> {
        if material.len() < MIN_KEY_BYTES {
            return Err(ShortKey(material.len()));
        }
        let master = hmac::Key::new(hmac::HMAC_SHA256, material);
        let derive = |label: &str| hmac::sign(&master, label.as_bytes());
        let id_tag = derive("mailroom unsubscribe: key id");
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&id_tag.as_ref()[..ID_BYTES]);
        let seal_bytes = derive("mailroom unsubscribe: seal");
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, seal_bytes.as_ref())
            .map_err(|_| ShortKey(material.len()))?;
        let nonce_bytes = derive("mailroom unsubscribe: nonce");
        Ok(Self {
            id,
            seal: LessSafeKey::new(unbound),
            nonce: hmac::Key::new(hmac::HMAC_SHA256, nonce_bytes.as_ref()),
        })
    }

    fn nonce(&self, namespace: &str, list: &str, address: &str) -> [u8; NONCE_BYTES] {
        let input = format!("{namespace}\0{list}\0{address}");
        let tag = hmac::sign(&self.nonce, input.as_bytes());
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_BYTES]);
        nonce
    }
}

/// The keys tokens are sealed and opened with: the current one seals, the
/// previous one (during a rotation) still opens.
#[derive(Debug)]
pub struct KeyRing {
    /// The key new tokens are sealed with.
    pub current: SealKey,
    /// The key before it, if the Secret still holds it.
    pub previous: Option<SealKey>,
}

/// Why a token does not open. Deliberately vague towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not base64url, or of a length no token has.
    #[error("not a token")]
    Malformed,
    /// Sealed with a key this ring does not hold (rotated out, or forged).
    #[error("sealed with an unknown key")]
    UnknownKey,
    /// The tag does not check out: forged, altered, or for another
    /// namespace or list.
    #[error("does not open")]
    Forged,
}

fn associated(namespace: &str, list: &str) -> Vec<u8> {
    format!("mailroom unsubscribe v1\0{namespace}\0{list}").into_bytes()
}

impl KeyRing {
    /// The token for `address` on `list` in `namespace`.
    pub fn seal(&self, namespace: &str, list: &str, address: &str) -> String {
        let key = &self.current;
        let address = address.to_ascii_lowercase();
        let nonce = key.nonce(namespace, list, &address);
        let mut sealed = address.into_bytes();
        // Sealing fails only for inputs of gigabytes.
        if key
            .seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(namespace, list)),
                &mut sealed,
            )
            .is_err()
        {
            sealed.clear();
        }
        let mut token = Vec::with_capacity(ID_BYTES + NONCE_BYTES + sealed.len());
        token.extend_from_slice(&key.id);
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&sealed);
        BASE64URL_NOPAD.encode(&token)
    }

    /// The address `token` names on `list` in `namespace`.
    pub fn open(&self, namespace: &str, list: &str, token: &str) -> Result<String, Refused> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(Refused::Malformed);
        }
        let bytes = BASE64URL_NOPAD
            .decode(token.as_bytes())
            .map_err(|_| Refused::Malformed)?;
        let head = ID_BYTES + NONCE_BYTES;
        if bytes.len() < head + TAG_BYTES + 3 || bytes.len() > head + MAX_ADDRESS_BYTES + TAG_BYTES
        {
            return Err(Refused::Malformed);
        }
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id[..] == bytes[..ID_BYTES])
            .ok_or(Refused::UnknownKey)?;
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&bytes[ID_BYTES..head]);
        let mut sealed = bytes[head..].to_vec();
        let opened = key
            .seal
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(namespace, list)),
                &mut sealed,
            )
            .map_err(|_| Refused::Forged)?;
        let address = std::str::from_utf8(opened).map_err(|_| Refused::Forged)?;
        // The nonce must be the one this address gets: one token per
        // recipient and list.
        if key.nonce(namespace, list, address) != nonce {
            return Err(Refused::Forged);
        }
        Ok(address.to_string())
    }

    /// Whether this ring holds the key `token` was sealed with (a token of
    /// a newer key means the ring should be read again).
    pub fn knows(&self, token: &str) -> bool {
        let Ok(bytes) = BASE64URL_NOPAD.decode(token.as_bytes()) else {
            return true;
        };
        bytes.len() < ID_BYTES
            || std::iter::once(&self.current)
                .chain(&self.previous)
                .any(|k| k.id[..] == bytes[..ID_BYTES])
    }
}

/// Fresh key material: 32 random bytes from the system's generator.
pub fn generate() -> Option<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut material = vec![0u8; MIN_KEY_BYTES];
    ring::rand::SystemRandom::new().fill(&mut material).ok()?;
    Some(material)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(material: &[u8], previous: Option<&[u8]>) -> KeyRing {
        KeyRing {
            current: SealKey::new(material).expect("key"),
            previous: previous.map(|m| SealKey::new(m).expect("key")),
        }
    }

    #[test]
    fn a_token_opens_to_its_address_on_its_namespace_and_list_only() {
        let keys = ring(&[7; 32], None);
        let token = keys.seal("shop", "news", "Bo@Example.org");
        assert_eq!(
            keys.open("shop", "news", &token),
            Ok("bo@example.org".into())
        );
        assert_eq!(token, keys.seal("shop", "news", "bo@example.org"));
        assert!(!token.contains("example"), "{token}");
        assert_eq!(keys.open("blog", "news", &token), Err(Refused::Forged));
        assert_eq!(keys.open("shop", "offers", &token), Err(Refused::Forged));
        let other = ring(&[8; 32], None);
        assert_eq!(other.open("shop", "news", &token), Err(Refused::UnknownKey));
        assert_eq!(keys.open("shop", "news", "!!"), Err(Refused::Malformed));
        assert_eq!(keys.open("shop", "news", "AAAA"), Err(Refused::Malformed));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let keys = ring(&[7; 32], None);
        let token = keys.seal("shop", "news", "bo@example.org");
        let bytes = BASE64URL_NOPAD.decode(token.as_bytes()).expect("base64");
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let altered = BASE64URL_NOPAD.encode(&altered);
            assert!(keys.open("shop", "news", &altered).is_err(), "byte {i}");
        }
    }

    #[test]
    fn the_previous_key_still_opens_after_a_rotation() {
        let old = ring(&[7; 32], None);
        let token = old.seal("shop", "news", "bo@example.org");
        let rotated = ring(&[9; 32], Some(&[7; 32]));
        assert!(rotated.knows(&token));
        assert_eq!(
            rotated.open("shop", "news", &token),
            Ok("bo@example.org".into())
        );
        assert_ne!(rotated.seal("shop", "news", "bo@example.org"), token);
        let dropped = ring(&[9; 32], None);
        assert!(!dropped.knows(&token));
        assert!(SealKey::new(&[1; 16]).is_err());
    }

    #[test]
    fn the_longest_address_fits_the_token_bound() {
        let keys = ring(&[7; 32], None);
        let address = format!("{}@{}", "a".repeat(64), "b".repeat(189));
        let token = keys.seal("n".repeat(63).as_str(), "l", &address);
        assert!(token.len() <= MAX_TOKEN_CHARS, "{}", token.len());
        assert!(keys.open(&"n".repeat(63), "l", &token).is_ok());
    }
}
