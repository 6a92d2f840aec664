//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): one
//! replica sends, the others stand by and take over when its lease expires
//! (at most `LEASE_SECONDS` after it stops renewing). The claim written before
//! each send is guarded by resourceVersion as well, so even two replicas that
//! briefly both believe they lead cannot send the same attempt twice.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a lease is valid after its last renewal.
pub const LEASE_SECONDS: u64 = 10;
/// How long before expiry the leader renews.
pub const GRACE_SECONDS: u64 = 3;

/// The outcome of waiting for the lease.
pub enum Leading {
    /// This replica leads while it holds the `Lease`.
    Elected(Lease),
    /// Shutdown was asked for while standing by.
    StoppedBeforeElected,
}

/// Holds the lease while leading.
pub struct Lease {
    leader: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    shutdown: futures::future::Shared<std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    lost: Arc<AtomicBool>,
}

impl Lease {
    /// Completes when the controller must stop: on shutdown, or when the
    /// lease is lost.
    pub fn stop(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut leader = self.leader.clone();
        let shutdown = self.shutdown.clone();
        let lost = self.lost.clone();
        async move {
            let lease_lost = async {
                while leader.changed().await.is_ok() {
                    if !*leader.borrow() {
                        break;
                    }
                }
                warn!("the lease was lost: stopping new sends");
                lost.store(true, Ordering::SeqCst);
            };
            tokio::select! {
                _ = shutdown => {},
                _ = lease_lost => {},
            }
        }
    }

    /// Releases the lease (when still held) and returns the exit code: a
    /// replica that lost its lease exits non-zero so it restarts as a standby.
    pub async fn finish(self) -> ExitCode {
        let lost = self.lost.load(Ordering::SeqCst);
        drop(self.leader);
        match self.task.await {
            Ok(Ok(_)) => info!("lease released"),
            Ok(Err(e)) => warn!(error = %e, "releasing the lease"),
            Err(e) => warn!(error = %e, "the lease task ended abnormally"),
        }
        if lost {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Waits until this replica holds the lease `name` in `namespace`, or until
/// `shutdown` completes.
pub async fn lead(
    client: Client,
    name: &str,
    namespace: &str,
    identity: &str,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<Leading, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    let shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(shutdown);
    let shutdown = futures::future::FutureExt::shared(shutdown);
    info!(lease = %format!("{namespace}/{name}"), identity, "standing by for the lease");
    while !*leader.borrow_and_update() {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    return match task.await {
                        Ok(Err(e)) => Err(e),
                        _ => Ok(Leading::StoppedBeforeElected),
                    };
                }
            }
            _ = shutdown.clone() => {
                drop(leader);
                let _ = task.await;
                return Ok(Leading::StoppedBeforeElected);
            }
        }
    }
    info!(identity, "elected: this replica sends");
    Ok(Leading::Elected(Lease {
        leader,
        task,
        shutdown,
        lost: Arc::new(AtomicBool::new(false)),
    }))
}
