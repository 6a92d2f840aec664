//! The shared corpus of real bounce mails (`../shared/sisimai-bounces/`):
//! each mail with what Sisimai decodes from it. Read by the bounce judge's
//! unit table and by the end-to-end test that answers real sent messages.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The corpus mails whose MIME the anonymisation broke (the corpus's
/// README: a reader that leaves them alone is right), and how.
pub const BROKEN_MIME: &[(&str, &str)] = &[
    (
        "lhost-office365-01.eml",
        "multipart/report with no delivery-status part",
    ),
    (
        "rhost-google-01.eml",
        "the delivery-status part under another boundary",
    ),
    (
        "rhost-google-02.eml",
        "the parts under another boundary than the header's",
    ),
    (
        "rfc3464-04.eml",
        "the delivery-status fields with no part header",
    ),
    (
        "rfc3464-06.eml",
        "the delivery-status fields with no part header",
    ),
];

/// One mail of the corpus.
pub struct Sample {
    /// Its path under `maildir/`.
    pub file: String,
    /// Its MTA family.
    pub family: String,
    /// Each recipient Sisimai names, with the class a reader should record:
    /// `hard`, `soft`, `complaint`, `autoreply`; none for a mail that is no
    /// bounce.
    pub recipients: Vec<(String, String)>,
    /// The sender of the original message, as the mail names it.
    pub addresser: String,
    /// The original message's Message-ID, without brackets ("" if none).
    pub message_id: String,
    /// The mail.
    pub raw: Vec<u8>,
}

impl Sample {
    /// Whether its MIME is broken.
    pub fn broken(&self) -> bool {
        BROKEN_MIME
            .iter()
            .any(|(name, _)| self.file.ends_with(name))
    }
}

fn base(manifest: &Path) -> PathBuf {
    manifest.join("../shared/sisimai-bounces")
}

/// Every mail of the corpus; `manifest` is the crate's directory.
pub fn samples(manifest: &Path) -> Vec<Sample> {
    let base = base(manifest);
    let text = std::fs::read_to_string(base.join("expected.json")).expect("expected.json");
    let expected: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    expected
        .iter()
        .map(|s| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let file = text(&s["file"]);
            Sample {
                raw: std::fs::read(base.join("maildir").join(&file)).expect("the mail"),
                family: text(&s["group"]),
                recipients: s["recipients"]
                    .as_array()
                    .expect("recipients")
                    .iter()
                    .map(|r| (text(&r["address"]), text(&r["expect"])))
                    .collect(),
                addresser: text(&s["addresser"]),
                message_id: text(&s["messageid"]),
                file,
            }
        })
        .collect()
}
