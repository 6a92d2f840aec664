//! An independent DKIM verifier for the tests: dkimpy (Debian's
//! `python3-dkim`, the reference Python implementation; Ed25519 through
//! `python3-nacl`), run by the system's Python, with the provider's
//! published TXT value given in place of a DNS lookup.

use std::io::Write;
use std::process::{Command, Stdio};

const VERIFY: &str = r#"
import os, sys, dkim
record = os.environ["DKIM_TXT"].encode()
message = sys.stdin.buffer.read()
ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
print("pass" if ok else "fail")
"#;

/// The Python that Debian's packages install into.
const PYTHON: &str = "/usr/bin/python3";

/// Whether `raw` carries a DKIM signature that verifies against `txt`.
pub fn verifies(raw: &[u8], txt: &str) -> bool {
    let mut child = Command::new(PYTHON)
        .args(["-c", VERIFY])
        .env("DKIM_TXT", txt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-dkim and python3-nacl must be installed");
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
