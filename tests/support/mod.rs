//! Test support for integration tests: a real kube-apiserver + etcd and a real
//! SMTP server (mailpit), started once per test binary, or reused when
//! `MAILROOM_TEST_ENV` names a running `hack/dev-up.sh` directory; a fresh
//! namespace per test; the project's CRDs installed; a typed mailpit client.
//!
//! Set `MAILROOM_TEST_KUBECONFIG` to run the same tests against an existing
//! cluster (a kind cluster, say): then only mailpit is started here.

#![allow(dead_code)]

pub mod dkim;
pub mod fixtures;
pub mod mailpit;
pub mod sisimai;
pub mod stalling_smtp;
pub mod webhooks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[allow(unused_imports)]
pub use mailpit::Mailpit;

/// The shared environment of one test binary.
pub struct Env {
    /// The admin kubeconfig of the control plane.
    pub kubeconfig: PathBuf,
    /// Where mailpit takes SMTP (`host:port`); it requires STARTTLS and AUTH.
    pub smtp: String,
    /// mailpit's REST API base URL.
    pub mailpit_api: String,
    /// The PEM CA that signed mailpit's and the apiserver's certificates.
    pub ca_pem: String,
    /// The SMTP user name mailpit accepts.
    pub smtp_username: String,
    /// The SMTP password mailpit accepts.
    pub smtp_password: String,
    /// The state directory (logs, extra servers started by tests).
    pub dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory with the built tools (kubectl, mailpit, ...).
pub fn tools_bin() -> PathBuf {
    std::env::var_os("MAILROOM_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/tools/bin"))
}

/// The environment, started on first use.
pub fn env() -> &'static Env {
    mailroom::install_crypto_provider();
    ENV.get_or_init(start_env)
}

fn read_env_file(dir: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("env"))
        .unwrap_or_else(|e| panic!("reading {}/env: {e}", dir.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn start_env() -> Env {
    let external_kubeconfig = std::env::var_os("MAILROOM_TEST_KUBECONFIG").map(PathBuf::from);
    let dir = match std::env::var_os("MAILROOM_TEST_ENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = std::env::temp_dir().join(format!("mailroom-test-{}", std::process::id()));
            let mut cmd = Command::new(root().join("hack/dev-up.sh"));
            cmd.arg(&dir)
                .arg("--owner-pid")
                .arg(std::process::id().to_string())
                .arg("--quiet");
            if external_kubeconfig.is_some() {
                cmd.arg("--mailpit-only");
            }
            let out = cmd.output().expect("running hack/dev-up.sh");
            assert!(
                out.status.success(),
                "hack/dev-up.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        }
    };
    let vars = read_env_file(&dir);
    let get = |k: &str| {
        vars.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from {}/env", dir.display()))
    };
    let kubeconfig = external_kubeconfig.unwrap_or_else(|| PathBuf::from(get("KUBECONFIG")));
    let env = Env {
        kubeconfig,
        smtp: get("MAILPIT_SMTP"),
        mailpit_api: get("MAILPIT_API"),
        ca_pem: std::fs::read_to_string(get("MAILROOM_CA")).expect("reading the CA"),
        smtp_username: get("MAILPIT_SMTP_USERNAME"),
        smtp_password: std::fs::read_to_string(get("MAILPIT_SMTP_PASSWORD_FILE"))
            .expect("reading the SMTP password"),
        dir,
    };
    install_crds(&env.kubeconfig);
    env
}

/// Runs kubectl against the environment and returns its output.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let bin = tools_bin().join("kubectl");
    let bin = if bin.exists() {
        bin
    } else {
        PathBuf::from("kubectl")
    };
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl")
}

fn install_crds(kubeconfig: &Path) {
    let crds = root().join("crds");
    let crds = crds.to_str().expect("utf-8 path");
    let out = kubectl(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", crds],
    );
    assert!(
        out.status.success(),
        "applying crds/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "-f",
            crds,
            "--timeout=60s",
        ],
    );
    assert!(
        out.status.success(),
        "waiting for crds/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What deploy/ installs beside them: the admission policy that refuses
    // what the schema cannot judge alone.
    let policy = root().join("deploy/base/admission-policy.yaml");
    let policy = policy.to_str().expect("utf-8 path");
    let out = kubectl(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", policy],
    );
    assert!(
        out.status.success(),
        "applying the admission policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kube client with admin rights. Each test makes its own: a client is tied
/// to the tokio runtime that created it, and every test has its own runtime.
pub async fn client() -> Client {
    Client::try_from(config().await).expect("building a kube client")
}

/// The admin client configuration.
pub async fn config() -> Config {
    let kubeconfig = Kubeconfig::read_from(&env().kubeconfig).expect("reading the kubeconfig");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("loading the kubeconfig")
}

/// A client that acts as `user` (with `groups`) through impersonation: it has
/// exactly that identity's RBAC permissions.
pub async fn impersonating_client(user: &str, groups: &[&str]) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).expect("building an impersonating client")
}

/// A fresh namespace for one test, named after it.
pub async fn namespace(client: &Client, test: &str) -> String {
    let suffix: u32 = rand_suffix();
    let name = format!(
        "{}-{suffix:08x}",
        test.replace('_', "-").chars().take(40).collect::<String>()
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"mailroom.dev/test": "true"}}
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the test namespace");
    name
}

/// A short random string, to make subjects unique across test runs.
pub fn namespace_suffix() -> String {
    format!("{:08x}", rand_suffix())
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
/// For conditions the test waits on, never for fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until object `name` of `api` is gone (deleted, finalizers done).
pub async fn wait_gone<K>(api: &kube::Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{name} gone");
    eventually(&what, Duration::from_secs(30), || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A subject unique to this run, starting with `what`.
pub fn unique(what: &str) -> String {
    format!("{what} {}", namespace_suffix())
}

/// How many messages with exactly `subject` the shared mailpit holds now.
pub async fn received_count(subject: &str) -> usize {
    Mailpit::shared()
        .search(&format!("subject:\"{subject}\""))
        .await
        .len()
}

/// Waits until the shared mailpit holds a message with exactly `subject`,
/// and returns every such message.
pub async fn received(subject: &str) -> Vec<mailpit::Summary> {
    Mailpit::shared()
        .wait_for(
            &format!("subject:\"{subject}\""),
            1,
            std::time::Duration::from_secs(10),
        )
        .await
}

/// The metadata mailroom sends with each API email of message `name` (its
/// namespace, name and UID, `.` written as `_`), in key order: what each
/// service echoes in its webhooks.
pub fn origin(message: &mailroom::api::EmailMessage) -> Vec<(String, String)> {
    let meta = &message.metadata;
    vec![
        (
            "mailroom-name".into(),
            meta.name.clone().unwrap_or_default().replace('.', "_"),
        ),
        (
            "mailroom-ns".into(),
            meta.namespace.clone().unwrap_or_default(),
        ),
        ("mailroom-uid".into(), meta.uid.clone().unwrap_or_default()),
    ]
}
