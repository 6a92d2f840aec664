//! The controller under test: the release `mailroom` binary as its own
//! process, and what the kernel says it used (CPU seconds, peak RSS).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::Error;

/// A running controller process.
pub struct Controller {
    child: Child,
}

/// What the controller used, from /proc.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    /// User plus system CPU seconds since it started.
    pub cpu_seconds: f64,
    /// Peak resident memory (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

impl Controller {
    /// Starts `binary run` for `namespace` (every namespace when `None`),
    /// without leader election, logging to `log`.
    pub fn start(
        binary: &Path,
        flags: &[String],
        kubeconfig: &Path,
        namespace: Option<&str>,
        log: &Path,
    ) -> Result<Self, Error> {
        Self::start_on(
            binary,
            flags,
            kubeconfig,
            namespace,
            log,
            "127.0.0.1:0",
            "127.0.0.1:0",
        )
    }

    /// As `start`, with the admin server on `admin` and the webhook
    /// receiver on `webhook`.
    pub fn start_on(
        binary: &Path,
        flags: &[String],
        kubeconfig: &Path,
        namespace: Option<&str>,
        log: &Path,
        admin: &str,
        webhook: &str,
    ) -> Result<Self, Error> {
        let log = std::fs::File::create(log)
            .map_err(|e| Error::Setup(format!("controller log {}: {e}", log.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::Setup(format!("controller log: {e}")))?;
        let scope = namespace.map(|ns| ["--namespace", ns]);
        let child = Command::new(binary)
            .arg("run")
            .args(scope.iter().flatten())
            .args([
                "--leader-election=false",
                "--allowed-endpoint-hosts",
                "127.0.0.1",
                "--admin-addr",
                admin,
                "--webhook-addr",
                webhook,
                "--log-level",
                "warn",
            ])
            .args(flags)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Setup(format!("starting {}: {e}", binary.display())))?;
        Ok(Self { child })
    }

    /// CPU seconds and peak RSS so far.
    pub fn usage(&self) -> Usage {
        Usage {
            cpu_seconds: cpu_seconds(self.child.id()),
            peak_rss_mib: self.status_mib("VmHWM:"),
        }
    }

    /// How it ended, if it did.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A `/proc/<pid>/status` memory line (`VmHWM:`, `VmRSS:`), MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// User plus system CPU seconds process `pid` has used (0 when it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// CPU seconds so far of each process the environment recorded
/// (`<dir>/pids/<name>.pid`: etcd, kube-apiserver, mailpit).
pub fn environment_cpu(dir: &Path) -> std::collections::BTreeMap<String, f64> {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return Default::default();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".pid")?
                .to_string();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name, cpu_seconds(pid)))
        })
        .collect()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when unknown.
fn clock_ticks() -> f64 {
    getconf("CLK_TCK").map_or(100.0, |ticks| ticks as f64)
}

/// A system variable as `getconf` prints it, when it is a number.
pub fn getconf(variable: &str) -> Option<u64> {
    let out = Command::new("getconf").arg(variable).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}
