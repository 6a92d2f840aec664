//! The `mailroom render` command: its flags, reading the manifests (and,
//! with `--from-cluster`, the template and provider the message names),
//! and what it prints. Errors name the file, the line and the field.

use std::io::Read;

use kube::Api;

use super::files::{Manifests, Source, read};
use super::output::{Format, print};
use super::{Inputs, lines, render};
use crate::api::message::ProviderKind;
use crate::api::{ClusterEmailProvider, EmailProvider, EmailTemplate};

/// `mailroom render`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// A manifest with the EmailMessage (and, if it names them, its
    /// EmailTemplate and EmailProvider); repeatable; `-` reads standard
    /// input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Which message, when the files hold more than one.
    #[arg(long)]
    pub message: Option<String>,
    /// JSON laid over the message's `data` (top-level keys), e.g.
    /// `'{"name": "Ann"}'`.
    #[arg(long)]
    pub data: Option<String>,
    /// For a bulk message: the recipient to render (its index).
    #[arg(long, default_value_t = 0)]
    pub recipient: usize,
    /// What to print.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Eml)]
    pub output: Format,
    /// Read the template and provider the message names from the cluster
    /// (KUBECONFIG), in the message's namespace (or `--namespace`), when the
    /// files do not hold them.
    #[arg(long)]
    pub from_cluster: bool,
    /// The namespace to read from with `--from-cluster` (default: the
    /// message's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// Runs the command: what to print, or the error to show.
pub async fn run(args: RenderArgs) -> Result<String, String> {
    let manifests = read_files(&args.files)?;
    let (message, source) = pick(&manifests, args.message.as_deref())?;
    let data = match &args.data {
        Some(text) => {
            Some(serde_json::from_str(text).map_err(|e| format!("--data: not JSON: {e}"))?)
        }
        None => None,
    };
    let mut template = message.spec.template_ref.as_ref().and_then(|r| {
        manifests
            .templates
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(r.name.as_str()))
            .cloned()
    });
    let reference = &message.spec.provider_ref;
    let mut provider = manifests
        .providers
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(reference.name.as_str()))
        .map(|p| p.spec.clone());
    if args.from_cluster {
        let namespace = args
            .namespace
            .clone()
            .or_else(|| message.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let client = crate::kube_client::connect()
            .await
            .map_err(|e| format!("--from-cluster: connecting (KUBECONFIG or in-cluster): {e}"))?;
        if let (None, Some(r)) = (&template, &message.spec.template_ref) {
            template = cluster_template(&client, &namespace, &r.name).await?;
        }
        if provider.is_none() {
            provider = cluster_provider(&client, &namespace, reference).await?;
        }
    }
    let inputs = Inputs {
        message: message.clone(),
        template,
        provider,
        data,
        recipient: args.recipient,
        unsubscribe_key: None,
    };
    let email = render(&inputs).map_err(|e| located(source, &e.message))?;
    print(&email, args.output)
}

/// The manifests of `files` (`-` is standard input).
fn read_files(files: &[String]) -> Result<Manifests, String> {
    let mut manifests = Manifests::default();
    for file in files {
        let text = if file == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading standard input: {e}"))?;
            text
        } else {
            std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?
        };
        read(file, &text, &mut manifests).map_err(|e| e.message)?;
    }
    Ok(manifests)
}

/// EmailTemplate `name` in `namespace`, read from the cluster.
async fn cluster_template(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<EmailTemplate>, String> {
    Api::<EmailTemplate>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("--from-cluster: reading EmailTemplate {namespace}/{name}: {e}"))
}

/// The provider `reference` names, read from the cluster (none for a
/// route: its provider is chosen when sending).
async fn cluster_provider(
    client: &kube::Client,
    namespace: &str,
    reference: &crate::api::message::ProviderRef,
) -> Result<Option<crate::api::EmailProviderSpec>, String> {
    let name = &reference.name;
    match reference.kind {
        ProviderKind::EmailProvider => Api::<EmailProvider>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|p| p.map(|p| p.spec))
            .map_err(|e| format!("--from-cluster: reading EmailProvider {namespace}/{name}: {e}")),
        ProviderKind::ClusterEmailProvider => Api::<ClusterEmailProvider>::all(client.clone())
            .get_opt(name)
            .await
            .map(|p| p.map(|p| p.spec.provider))
            .map_err(|e| format!("--from-cluster: reading ClusterEmailProvider {name}: {e}")),
        ProviderKind::EmailRoute => Ok(None),
    }
}

/// The message to render: the one named, or the only one.
fn pick<'a>(
    manifests: &'a Manifests,
    name: Option<&str>,
) -> Result<&'a (crate::api::EmailMessage, Source), String> {
    match name {
        Some(name) => manifests
            .messages
            .iter()
            .find(|(m, _)| m.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("--message {name}: no such EmailMessage in the files")),
        None => match manifests.messages.as_slice() {
            [one] => Ok(one),
            [] => Err("the files hold no EmailMessage".into()),
            many => Err(format!(
                "the files hold {} EmailMessages: name one with --message ({})",
                many.len(),
                many.iter()
                    .filter_map(|(m, _)| m.metadata.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

/// `message` prefixed with the file and line of the field it names.
fn located(source: &Source, message: &str) -> String {
    match lines::line_of(&source.text, message) {
        Some(line) => format!(
            "{}:{}: {message}",
            source.file,
            source.first_line + line - 1
        ),
        None => format!("{}: {message}", source.file),
    }
}
