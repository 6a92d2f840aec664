//! The `mailroom` command: runs the controller, or prints the CRDs.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand};
use mailroom::admin::Telemetry;
use mailroom::controller::{self, Settings, leader};
use mailroom::logging::{self, LogFormat};
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
    /// Show what a message would send, without sending: the MIME message,
    /// its HTML or text body, or every part as JSON.
    Render(mailroom::preview::command::RenderArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The controller's settings.
    #[command(flatten)]
    controller: Settings,
    /// The delivery webhook receiver's settings.
    #[command(flatten, next_help_heading = "Delivery webhook receiver")]
    webhook: WebhookSettings,
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
        Command::Render(args) => render(args),
    }
}

fn render(args: mailroom::preview::command::RenderArgs) -> ExitCode {
    mailroom::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mailroom::preview::command::run(args)) {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    logging::init(args.log_format, &args.log_level);
    mailroom::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match mailroom::kube_client::connect().await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "connecting to Kubernetes (in-cluster config or KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let settings = args.controller.clone();
        let telemetry = Arc::new(Telemetry::default());
        let admin = args.admin_addr;
        let admin_telemetry = telemetry.clone();
        tokio::spawn(async move {
            if let Err(e) = mailroom::admin::serve(admin, admin_telemetry).await {
                tracing::error!(error = %e, %admin, "the admin server stopped; probes will fail");
            }
        });
        if args.webhooks {
            // The receiver serves the namespaces the controller serves.
            let settings = WebhookSettings {
                namespace: args.controller.namespace.clone(),
                cluster_provider_namespace: args.controller.cluster_provider_namespace.clone(),
                unsubscribe_key_secret: args.controller.unsubscribe_key_secret.clone(),
                ..args.webhook.clone()
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
            telemetry.metrics.set_leader(true);
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
                telemetry.metrics.set_leader(true);
                controller::run(client, settings, telemetry.clone(), lost.stop()).await;
                telemetry.metrics.set_leader(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let cli = Cli::try_parse_from(["mailroom", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(
            format!("{:?}", args.controller),
            format!("{:?}", Settings::default())
        );
        assert_eq!(
            format!("{:?}", args.webhook),
            format!("{:?}", WebhookSettings::default())
        );
    }

    #[test]
    fn the_receiver_serves_what_the_controller_serves() {
        let cli = Cli::try_parse_from([
            "mailroom",
            "run",
            "--namespace",
            "team",
            "--webhook-max-requests",
            "7",
            "--allowed-endpoint-hosts",
            "a.example,b.example",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(args.controller.namespace.as_deref(), Some("team"));
        assert_eq!(args.webhook.max_requests, 7);
        assert_eq!(
            args.controller.allowed_endpoint_hosts,
            vec!["a.example", "b.example"]
        );
    }
}
