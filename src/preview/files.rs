//! Reads the manifests `mailroom render -f` is given: every YAML document
//! of every file (`-` is standard input), keeping the EmailMessages,
//! EmailTemplates and EmailProviders (and ClusterEmailProviders, as the
//! provider they describe). A document that does not parse is named by
//! its file and line.

use serde::Deserialize;
use serde_json::Value;

use super::RenderError;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailTemplate};

/// One manifest's objects, with where each came from.
#[derive(Default, Debug)]
pub struct Manifests {
    /// The messages, with their file and YAML text.
    pub messages: Vec<(EmailMessage, Source)>,
    /// The templates.
    pub templates: Vec<EmailTemplate>,
    /// The providers (a ClusterEmailProvider as the provider it describes).
    pub providers: Vec<EmailProvider>,
}

/// Where an object came from, to name a line in errors.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file (`-` for standard input).
    pub file: String,
    /// The document's text.
    pub text: String,
    /// The line the document starts at in the file (1-based).
    pub first_line: usize,
}

/// Reads `text` (from `file`) into `into`.
pub fn read(file: &str, text: &str, into: &mut Manifests) -> Result<(), RenderError> {
    let mut first_line = 1;
    for document in split(text) {
        let lines = document.lines().count();
        let start = first_line;
        first_line += lines + 1;
        if document.trim().is_empty()
            || document
                .lines()
                .all(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        {
            continue;
        }
        let value: Value = match serde_yaml_ng::from_str(document) {
            Ok(value) => value,
            Err(e) => {
                let line = e.location().map_or(start, |l| start + l.line() - 1);
                return Err(RenderError {
                    message: format!("{file}:{line}: not YAML: {e}"),
                });
            }
        };
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let parse = |what: &str| -> RenderError {
            RenderError {
                message: format!("{file}:{start}: not a valid {what}"),
            }
        };
        let named = |e: serde_json::Error, what: &str| RenderError {
            message: format!("{}: {e}", parse(what).message),
        };
        match kind.as_str() {
            "EmailMessage" => {
                let message =
                    EmailMessage::deserialize(&value).map_err(|e| named(e, "EmailMessage"))?;
                let source = Source {
                    file: file.to_string(),
                    text: document.to_string(),
                    first_line: start,
                };
                into.messages.push((message, source));
            }
            "EmailTemplate" => into
                .templates
                .push(EmailTemplate::deserialize(&value).map_err(|e| named(e, "EmailTemplate"))?),
            "EmailProvider" => into
                .providers
                .push(EmailProvider::deserialize(&value).map_err(|e| named(e, "EmailProvider"))?),
            "ClusterEmailProvider" => {
                let cluster = ClusterEmailProvider::deserialize(&value)
                    .map_err(|e| named(e, "ClusterEmailProvider"))?;
                into.providers.push(cluster.as_provider());
            }
            // Secrets, ConfigMaps, routes: not needed to render.
            _ => {}
        }
    }
    Ok(())
}

/// The documents of a YAML stream, split at `---` lines (each keeps its
/// own lines, so line numbers can be counted back).
fn split(text: &str) -> Vec<&str> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            documents.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&text[start..]);
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_kept_with_the_line_they_start_at() {
        let text = "# a comment\n---\napiVersion: mailroom.dev/v1alpha1\nkind: EmailTemplate\nmetadata: {name: t}\nspec: {subject: s, text: t}\n---\napiVersion: mailroom.dev/v1alpha1\nkind: EmailMessage\nmetadata: {name: m}\nspec: {providerRef: {name: p}, to: [a@example.org], templateRef: {name: t}}\n";
        let mut manifests = Manifests::default();
        read("f.yaml", text, &mut manifests).expect("read");
        assert_eq!(manifests.templates.len(), 1);
        assert_eq!(manifests.messages[0].1.first_line, 8);
        let bad = "kind: EmailMessage\nspec: [\n";
        let error = read("bad.yaml", bad, &mut Manifests::default()).expect_err("not YAML");
        assert!(error.message.starts_with("bad.yaml:"), "{}", error.message);
    }
}
