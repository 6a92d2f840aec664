//! The control plane on CPUs of its own: etcd and kube-apiserver pinned to
//! the first CPU, mailpit, the fakes, the load client and every controller
//! the benchmark starts to the others, as a cluster places them (the
//! apiserver on control-plane nodes, the operator and the mail server
//! elsewhere). Pinning uses `taskset` (util-linux) on every thread.

use std::path::Path;
use std::process::Command;

use crate::Error;

/// Which CPUs each side got.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Split {
    /// The CPU list of etcd and kube-apiserver.
    pub control_plane: String,
    /// The CPU list of everything else.
    pub rest: String,
}

/// Pins the environment's etcd and kube-apiserver (`<dir>/pids`) to the
/// first CPU and mailpit and this process (whose children inherit it) to
/// the rest. Fails on a machine with one CPU.
pub fn split(dir: &Path) -> Result<Split, Error> {
    let cpus = machine_cpus();
    if cpus < 2 {
        return Err(Error::Setup(
            "--split-cores needs at least two CPUs".to_string(),
        ));
    }
    let split = Split {
        control_plane: "0".to_string(),
        rest: match cpus {
            2 => "1".to_string(),
            _ => format!("1-{}", cpus - 1),
        },
    };
    for name in ["etcd", "kube-apiserver"] {
        pin(recorded_pid(dir, name)?, &split.control_plane)?;
    }
    pin(recorded_pid(dir, "mailpit")?, &split.rest)?;
    pin(std::process::id(), &split.rest)?;
    Ok(split)
}

/// The machine's online CPUs (`getconf _NPROCESSORS_ONLN`), whatever this
/// process is pinned to; the available parallelism when unknown.
pub fn machine_cpus() -> usize {
    crate::process::getconf("_NPROCESSORS_ONLN")
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The pid `hack/dev-up.sh` recorded for `name`.
fn recorded_pid(dir: &Path, name: &str) -> Result<u32, Error> {
    let path = dir.join("pids").join(format!("{name}.pid"));
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| Error::Setup(format!("no pid in {}", path.display())))
}

/// Sets the CPU list of every thread of `pid`.
fn pin(pid: u32, cpus: &str) -> Result<(), Error> {
    let out = Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", cpus, &pid.to_string()])
        .output()
        .map_err(|e| Error::Setup(format!("running taskset: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "taskset {cpus} for pid {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
