//! An independent DKIM verifier for the tests: dkimpy (the reference Python
//! implementation; Ed25519 through PyNaCl), run by the Python environment
//! `hack/test-python.sh` makes under `.cache/python/` (`make test` makes it),
//! with the provider's published TXT value given in place of a DNS lookup.

use std::io::Write;
use std::process::{Command, Stdio};

const VERIFY: &str = r#"
import os, sys, dkim
record = os.environ["DKIM_TXT"].encode()
message = sys.stdin.buffer.read()
ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
print("pass" if ok else "fail")
"#;

/// The Python with dkimpy and PyNaCl that `hack/test-python.sh` makes.
fn python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/python/current/bin/python3")
}

/// Whether `raw` carries a DKIM signature that verifies against `txt`.
pub fn verifies(raw: &[u8], txt: &str) -> bool {
    let mut child = Command::new(python())
        .args(["-c", VERIFY])
        .env("DKIM_TXT", txt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tests' Python: run hack/test-python.sh (make test does)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(raw)
        .expect("writing the message");
    let out = child.wait_with_output().expect("the verifier");
    assert!(
        out.status.success(),
        "the DKIM verifier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim() == "pass"
}
