//! The `mailroom` command: runs the controller, or prints the CRDs.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand};
use mailroom::admin::Telemetry;
use mailroom::controller::{self, Settings, leader};
use mailroom::telemetry::{self, LogFormat};
use mailroom::webhook::Settings as WebhookSettings;

/// A Kubernetes operator that sends email.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses the in-cluster config or KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MAILROOM_NAMESPACE")]
    namespace: Option<String>,
    /// The most messages reconciled at once.
    #[arg(long, default_value_t = Settings::default().concurrency, env = "MAILROOM_CONCURRENCY")]
    concurrency: u16,
    /// Attempts before a retryable failure becomes final.
    #[arg(long, default_value_t = Settings::default().max_attempts, env = "MAILROOM_MAX_ATTEMPTS")]
    max_attempts: u32,
    /// Seconds after its creation after which a message is no longer tried
    /// (providers and messages may set their own).
    #[arg(long, default_value_t = Settings::default().deadline_seconds, env = "MAILROOM_DEADLINE_SECONDS")]
    deadline_seconds: u32,
    /// The most sends in flight at once, over all providers.
    #[arg(long, default_value_t = Settings::default().max_concurrent_sends, env = "MAILROOM_MAX_CONCURRENT_SENDS")]
    max_concurrent_sends: usize,
    /// Elect one leader among replicas with a coordination.k8s.io Lease; only
    /// the leader sends.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "MAILROOM_LEADER_ELECTION")]
    leader_election: bool,
    /// The Lease's name.
    #[arg(long, default_value = "mailroom", env = "MAILROOM_LEASE_NAME")]
    lease_name: String,
    /// The Lease's namespace (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, else the
    /// host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Where the admin server listens: /metrics, /livez, /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "MAILROOM_ADMIN_ADDR")]
    admin_addr: std::net::SocketAddr,
    /// Where the delivery webhook receiver listens
    /// (`POST /webhooks/{namespace}/{provider}`).
    #[arg(long, default_value = "0.0.0.0:8081", env = "MAILROOM_WEBHOOK_ADDR")]
    webhook_addr: std::net::SocketAddr,
    /// Run the delivery webhook receiver.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "MAILROOM_WEBHOOKS")]
    webhooks: bool,
    /// Seconds a webhook request waits for its status writes before it is
    /// answered 503 (the service then retries). Keep it under the services'
    /// timeouts (Mailtrap 30 s).
    #[arg(
        long,
        default_value_t = WebhookSettings::default().ack_timeout.as_secs(),
        env = "MAILROOM_WEBHOOK_ACK_TIMEOUT_SECONDS"
    )]
    webhook_ack_timeout_seconds: u64,
    /// Seconds an event for a message id not known yet waits for it to
    /// appear before it is acknowledged as unknown (a webhook can arrive
    /// before the watch shows the status that holds the id).
    #[arg(
        long,
        default_value_t = WebhookSettings::default().unknown_grace.as_secs(),
        env = "MAILROOM_WEBHOOK_UNKNOWN_GRACE_SECONDS"
    )]
    webhook_unknown_grace_seconds: u64,
    /// The largest webhook request body taken, in bytes (413 past it,
    /// refused while reading).
    #[arg(long, default_value_t = WebhookSettings::default().max_body_bytes, env = "MAILROOM_WEBHOOK_MAX_BODY_BYTES")]
    webhook_max_body_bytes: usize,
    /// Seconds a webhook client has to send a request's headers (then the
    /// connection is closed), and then its body (408).
    #[arg(long, default_value_t = WebhookSettings::default().read_timeout.as_secs(), env = "MAILROOM_WEBHOOK_READ_TIMEOUT_SECONDS")]
    webhook_read_timeout_seconds: u64,
    /// Webhook requests handled at once; more are answered 503 at once.
    #[arg(long, default_value_t = WebhookSettings::default().max_requests, env = "MAILROOM_WEBHOOK_MAX_REQUESTS")]
    webhook_max_requests: usize,
    /// Webhook connections open at once; more wait to be accepted.
    #[arg(long, default_value_t = WebhookSettings::default().max_connections, env = "MAILROOM_WEBHOOK_MAX_CONNECTIONS")]
    webhook_max_connections: usize,
    /// Record a Normal Event for every Sent message (one more apiserver write
    /// per message). Failed and Unknown messages always get a Warning Event.
    #[arg(long, default_value_t = Settings::default().sent_events, action = clap::ArgAction::Set, env = "MAILROOM_SENT_EVENTS")]
    sent_events: bool,
    /// The namespace holding ClusterEmailProviders' Secrets and ConfigMaps:
    /// the controller's own. Unset, ClusterEmailProviders are not served.
    #[arg(long, env = "MAILROOM_CLUSTER_PROVIDER_NAMESPACE")]
    cluster_provider_namespace: Option<String>,
    /// Hosts an EmailProvider's `spec.api.endpoint` may name, comma-separated
    /// (e.g. a company proxy). Unset, endpoint overrides are refused: a
    /// tenant could otherwise point the controller at hosts inside the
    /// cluster.
    #[arg(long, value_delimiter = ',', env = "MAILROOM_ALLOWED_ENDPOINT_HOSTS")]
    allowed_endpoint_hosts: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "MAILROOM_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG overrides it).
    #[arg(long, default_value = "info", env = "MAILROOM_LOG_LEVEL")]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match mailroom::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: rendering the CRDs: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(*args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format, &args.log_level);
    mailroom::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "connecting to Kubernetes (in-cluster config or KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let settings = Settings {
            namespace: args.namespace.clone(),
            concurrency: args.concurrency,
            max_attempts: args.max_attempts,
            deadline_seconds: args.deadline_seconds,
            max_concurrent_sends: args.max_concurrent_sends,
            sent_events: args.sent_events,
            cluster_provider_namespace: args.cluster_provider_namespace.clone(),
            allowed_endpoint_hosts: args.allowed_endpoint_hosts.clone(),
        };
        let telemetry = Arc::new(Telemetry::default());
        let admin = args.admin_addr;
        let admin_telemetry = telemetry.clone();
        tokio::spawn(async move {
            if let Err(e) = mailroom::admin::serve(admin, admin_telemetry).await {
                tracing::error!(error = %e, %admin, "the admin server stopped; probes will fail");
            }
        });
        if args.webhooks {
            let settings = WebhookSettings {
                namespace: args.namespace.clone(),
                cluster_provider_namespace: args.cluster_provider_namespace.clone(),
                ack_timeout: std::time::Duration::from_secs(args.webhook_ack_timeout_seconds),
                unknown_grace: std::time::Duration::from_secs(args.webhook_unknown_grace_seconds),
                max_body_bytes: args.webhook_max_body_bytes,
                read_timeout: std::time::Duration::from_secs(args.webhook_read_timeout_seconds),
                max_requests: args.webhook_max_requests,
                max_connections: args.webhook_max_connections,
                ..Default::default()
            };
            let addr = args.webhook_addr;
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(error = %e, %addr, "binding the webhook receiver");
                    return ExitCode::FAILURE;
                }
            };
            let (client, telemetry) = (client.clone(), telemetry.clone());
            tokio::spawn(async move {
                let served =
                    mailroom::webhook::serve(listener, client, settings, telemetry, shutdown_signal());
                if let Err(e) = served.await {
                    tracing::error!(error = %e, %addr, "the webhook receiver stopped");
                }
            });
        }
        if !args.leader_election {
            telemetry.metrics.leader.set(1);
            controller::run(client, settings, telemetry, shutdown_signal()).await;
            return ExitCode::SUCCESS;
        }
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        let namespace = args.lease_namespace.clone().unwrap_or_else(|| "default".into());
        telemetry.health.standing_by.store(true, Ordering::SeqCst);
        let elected =
            leader::lead(client.clone(), &args.lease_name, &namespace, &identity, shutdown_signal()).await;
        telemetry.health.standing_by.store(false, Ordering::SeqCst);
        match elected {
            Ok(leader::Leading::Elected(lost)) => {
                telemetry.metrics.leader.set(1);
                controller::run(client, settings, telemetry.clone(), lost.stop()).await;
                telemetry.metrics.leader.set(0);
                lost.finish().await
            }
            Ok(leader::Leading::StoppedBeforeElected) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "leader election failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "SIGTERM handler unavailable; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight sends");
}
