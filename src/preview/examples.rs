//! Every message in `examples/` rendered as `mailroom render -o json` would
//! render it, against a golden file in `tests/golden/render/` (the error
//! text, for an example that is meant to fail). The files of the example's
//! own folder supply its templates and providers; a message whose provider
//! is elsewhere (the demo's, a cluster's, a route's) gets one with only a
//! `defaultFrom`; the demo's placeholders get local values. `MAILROOM_BLESS=1
//! cargo test` writes the goldens anew.

use std::path::{Path, PathBuf};

use super::files::{Manifests, read};
use super::output::{Format, print};
use super::{Inputs, render};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    files
}

#[test]
fn every_example_message_renders_as_its_golden_file_says() {
    let examples = root().join("examples");
    let goldens = root().join("tests/golden/render");
    let bless = std::env::var_os("MAILROOM_BLESS").is_some();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for dir in dirs {
        let mut folder = Manifests::default();
        for file in yaml_files(&dir) {
            // The demo's are templates hack/demo.sh fills in.
            let text = std::fs::read_to_string(&file)
                .expect("example")
                .replace("${FAKE_URL}", "http://127.0.0.1:1")
                .replace("${MAILPIT_HOST}", "127.0.0.1")
                .replace("${MAILPIT_PORT}", "1025")
                .replace("${MAILPIT_POP3_HOST}", "127.0.0.1")
                .replace("${MAILPIT_POP3_PORT}", "1110");
            if let Err(e) = read(&file.display().to_string(), &text, &mut folder) {
                panic!("{}", e.message);
            }
        }
        for (message, source) in &folder.messages {
            let reference = &message.spec.provider_ref;
            let provider = folder
                .providers
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(reference.name.as_str()))
                .map(|p| p.spec.clone())
                .or_else(|| {
                    serde_json::from_value(serde_json::json!({
                        "defaultFrom": "mailroom examples <examples@mailroom.dev>",
                        "smtp": {"host": "render.invalid"}}))
                    .ok()
                });
            let template = message.spec.template_ref.as_ref().and_then(|r| {
                folder
                    .templates
                    .iter()
                    .find(|t| t.metadata.name.as_deref() == Some(r.name.as_str()))
                    .cloned()
            });
            let inputs = Inputs {
                message: message.clone(),
                template,
                provider,
                data: None,
                recipient: 0,
                unsubscribe_key: Some(vec![7; 32]),
            };
            let rendered = match render(&inputs) {
                Ok(email) => print(&email, Format::Json).expect("json"),
                Err(e) => format!("error: {}", e.message),
            };
            let folder_name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = message.metadata.name.clone().unwrap_or_default();
            let stem = Path::new(&source.file)
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let golden = goldens.join(format!("{folder_name}-{stem}-{name}.json"));
            if bless {
                std::fs::create_dir_all(&goldens).expect("goldens");
                std::fs::write(&golden, format!("{rendered}\n")).expect("writing a golden");
            } else {
                let expected = std::fs::read_to_string(&golden).unwrap_or_default();
                if expected.trim_end() != rendered.trim_end() {
                    mismatches.push(format!(
                        "{name} ({}): differs from {}",
                        source.file,
                        golden.display()
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} example messages");
    assert!(
        mismatches.is_empty(),
        "run MAILROOM_BLESS=1 cargo test to accept:\n{}",
        mismatches.join("\n")
    );
}
