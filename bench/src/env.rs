//! The environment a benchmark runs in: the local control plane and mailpit
//! from `hack/dev-up.sh` (stopped when the benchmark exits), the project's
//! CRDs, and an admin client.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Error;

/// The running control plane and SMTP server.
pub struct Env {
    /// The repository root.
    pub root: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// mailpit's SMTP address (`host:port`; STARTTLS and AUTH required).
    pub smtp: String,
    /// The PEM CA of mailpit's certificate.
    pub ca_pem: String,
    /// mailpit's SMTP user and password.
    pub smtp_user: (String, String),
    /// The environment's directory (logs).
    pub dir: PathBuf,
}

impl Env {
    /// Starts a fresh environment under `dir`, owned by this process.
    pub fn start(root: &Path, dir: &Path) -> Result<Self, Error> {
        let out = Command::new(root.join("hack/dev-up.sh"))
            .arg(dir)
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .arg("--quiet")
            .output()
            .map_err(|e| Error::Setup(format!("running hack/dev-up.sh: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Setup(format!("hack/dev-up.sh failed: {stderr}")));
        }
        let text = std::fs::read_to_string(dir.join("env"))
            .map_err(|e| Error::Setup(format!("reading {}/env: {e}", dir.display())))?;
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |key: &str| {
            vars.get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| Error::Setup(format!("{key} missing from {}/env", dir.display())))
        };
        let read = |path: String| {
            std::fs::read_to_string(&path).map_err(|e| Error::Setup(format!("reading {path}: {e}")))
        };
        let env = Env {
            root: root.to_path_buf(),
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            smtp: get("MAILPIT_SMTP")?,
            ca_pem: read(get("MAILROOM_CA")?)?,
            smtp_user: (
                get("MAILPIT_SMTP_USERNAME")?,
                read(get("MAILPIT_SMTP_PASSWORD_FILE")?)?,
            ),
            dir: dir.to_path_buf(),
        };
        env.kubectl(&["apply", "--server-side", "-f", "crds/"])?;
        env.kubectl(&[
            "wait",
            "--for=condition=Established",
            "-f",
            "crds/",
            "--timeout=60s",
        ])?;
        Ok(env)
    }

    /// Runs kubectl from the built tools against the environment.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        let out = Command::new(self.root.join(".cache/tools/bin/kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(&self.root)
            .output()
            .map_err(|e| Error::Setup(format!("running kubectl: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Setup(format!("kubectl {args:?}: {stderr}")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An admin client with room for the load's concurrency.
    pub async fn client(&self) -> Result<Client, Error> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Setup(format!("kubeconfig: {e}")))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Setup(format!("kubeconfig: {e}")))?;
        Client::try_from(config).map_err(|e| Error::Setup(format!("client: {e}")))
    }
}
