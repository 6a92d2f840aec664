//! DKIM for the SMTP transport: reads the private key (RSA of 2048 bits or
//! more, PKCS#1 or PKCS#8 PEM; Ed25519 as PKCS#8 PEM or a base64 seed),
//! builds lettre's signer (relaxed/relaxed), and writes the DNS record that
//! publishes the public key. Key material never appears in an error.

use std::sync::Arc;

use base64::Engine;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;

use crate::api::dkim::{
    ALWAYS_SIGNED_HEADERS, DEFAULT_SIGNED_HEADERS, DkimAlgorithm, DkimRecord, DkimSpec,
};

/// The shortest RSA key taken, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The longest RSA key taken, in bits: signing costs grow with the cube of
/// the size, and one tenant's key must not slow every send.
pub const MAX_RSA_BITS: usize = 4096;

/// Why a DKIM key cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// A provider's DKIM signer and the record of its public key.
#[derive(Clone)]
pub struct Signer {
    /// lettre's configuration (key, domain, selector, headers).
    pub config: Arc<DkimConfig>,
    /// The TXT record to publish.
    pub record: DkimRecord,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("record", &self.record.name)
            .finish()
    }
}

/// Builds the signer of `spec` from the Secret value `key`.
pub fn signer(spec: &DkimSpec, key: &str) -> Result<Signer, KeyError> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let (signing_key, kind, public) = match spec.algorithm {
        DkimAlgorithm::RsaSha256 => {
            let private = rsa::RsaPrivateKey::from_pkcs1_pem(key.trim())
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(key.trim()))
                .map_err(|_| KeyError("not an RSA private key in PEM (PKCS#1 or PKCS#8)".into()))?;
            let bits = private.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(KeyError(format!(
                    "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
                )));
            }
            if bits > MAX_RSA_BITS {
                return Err(KeyError(format!(
                    "the RSA key has {bits} bits; at most {MAX_RSA_BITS} are taken"
                )));
            }
            let pkcs1 = private
                .to_pkcs1_pem(LineEnding::LF)
                .map_err(|e| KeyError(format!("the RSA key cannot be encoded: {e}")))?;
            let signing = DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa)
                .map_err(|_| KeyError("the RSA key cannot be used for signing".into()))?;
            let public = rsa::RsaPublicKey::from(&private)
                .to_public_key_der()
                .map_err(|e| KeyError(format!("the RSA public key cannot be encoded: {e}")))?;
            (signing, "rsa", base64.encode(public.as_bytes()))
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let private = ed25519_dalek::SigningKey::from_pkcs8_pem(key.trim())
                .ok()
                .or_else(|| {
                    let seed: [u8; 32] = base64.decode(key.trim()).ok()?.try_into().ok()?;
                    Some(ed25519_dalek::SigningKey::from_bytes(&seed))
                })
                .ok_or_else(|| {
                    KeyError(
                        "not an Ed25519 private key (PKCS#8 PEM, or its 32-byte seed in base64)"
                            .into(),
                    )
                })?;
            let seed = base64.encode(private.to_bytes());
            let signing = DkimSigningKey::new(&seed, DkimSigningAlgorithm::Ed25519)
                .map_err(|_| KeyError("the Ed25519 key cannot be used for signing".into()))?;
            let public = base64.encode(private.verifying_key().to_bytes());
            (signing, "ed25519", public)
        }
    };
    let mut names: Vec<&str> = if spec.headers.is_empty() {
        DEFAULT_SIGNED_HEADERS.to_vec()
    } else {
        spec.headers.iter().map(String::as_str).collect()
    };
    // RFC 8058 §3: one-click unsubscribe counts only when signed. Named
    // when absent too, so nobody can add them on the way.
    names.extend(ALWAYS_SIGNED_HEADERS);
    let mut headers: Vec<HeaderName> = Vec::new();
    for name in names {
        // lettre writes Content-* with the MIME body, after signing the
        // message's own headers: listed, they would break every signature.
        let mime = name.to_ascii_lowercase().starts_with("content-");
        if mime || headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            continue;
        }
        let header = HeaderName::new_from_ascii(name.to_string()).map_err(|_| {
            KeyError(format!(
                "spec.smtp.dkim.headers: {name:?} is not a header name"
            ))
        })?;
        headers.push(header);
    }
    let config = DkimConfig::new(
        spec.selector.clone(),
        spec.domain.clone(),
        signing_key,
        headers,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    );
    Ok(Signer {
        config: Arc::new(config),
        record: DkimRecord {
            name: format!("{}._domainkey.{}", spec.selector, spec.domain),
            value: format!("v=DKIM1; k={kind}; p={public}"),
        },
    })
}

/// Whether mail from `from_domain` signed for `dkim_domain` passes DMARC's
/// relaxed alignment: the same domain, or one a subdomain of the other (an
/// approximation of "the same organisational domain" without the public
/// suffix list).
pub fn aligned(from_domain: &str, dkim_domain: &str) -> bool {
    let (a, b) = (
        from_domain.to_ascii_lowercase(),
        dkim_domain.to_ascii_lowercase(),
    );
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::refs::KeyRef;

    fn spec(algorithm: DkimAlgorithm) -> DkimSpec {
        DkimSpec {
            domain: "example.com".into(),
            selector: "mail".into(),
            private_key_secret_ref: KeyRef {
                name: "dkim".into(),
                key: "private.pem".into(),
            },
            algorithm,
            headers: Vec::new(),
        }
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/dkim/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).expect("fixture")
    }

    #[test]
    fn rsa_keys_of_2048_bits_sign_and_shorter_ones_are_refused() {
        let signer =
            signer(&spec(DkimAlgorithm::RsaSha256), &fixture("rsa-2048.pem")).expect("key");
        assert_eq!(signer.record.name, "mail._domainkey.example.com");
        assert!(
            signer
                .record
                .value
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"),
            "{}",
            signer.record.value
        );
        let short = super::signer(&spec(DkimAlgorithm::RsaSha256), &fixture("rsa-1024.pem"));
        assert_eq!(
            short.map(|_| ()),
            Err(KeyError(
                "the RSA key has 1024 bits; at least 2048 are needed".into()
            ))
        );
        let long = super::signer(&spec(DkimAlgorithm::RsaSha256), &fixture("rsa-8192.pem"));
        assert_eq!(
            long.map(|_| ()),
            Err(KeyError(
                "the RSA key has 8192 bits; at most 4096 are taken".into()
            ))
        );
        let garbage = super::signer(&spec(DkimAlgorithm::RsaSha256), "-----BEGIN nothing");
        assert!(garbage.is_err());
        let ed = super::signer(&spec(DkimAlgorithm::RsaSha256), &fixture("ed25519.pem"));
        assert!(ed.is_err(), "an Ed25519 key is not an RSA key");
    }

    #[test]
    fn ed25519_keys_read_as_pem_or_seed() {
        let pem =
            signer(&spec(DkimAlgorithm::Ed25519Sha256), &fixture("ed25519.pem")).expect("pem");
        assert!(pem.record.value.starts_with("v=DKIM1; k=ed25519; p="));
        let seed = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(signer(&spec(DkimAlgorithm::Ed25519Sha256), &seed).is_ok());
        assert!(signer(&spec(DkimAlgorithm::Ed25519Sha256), "c2hvcnQ=").is_err());
    }

    #[test]
    fn alignment_is_relaxed() {
        assert!(aligned("example.com", "example.com"));
        assert!(aligned("mail.example.com", "Example.com"));
        assert!(aligned("example.com", "mail.example.com"));
        assert!(!aligned("example.org", "example.com"));
        assert!(!aligned("notexample.com", "example.com"));
    }
}
