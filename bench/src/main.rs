//! `mailroom-bench`: measures the operator against the control plane's own
//! limit, in one run on one machine. It starts the local control plane and
//! mailpit (`hack/dev-up.sh`), the API fakes, and per run the release
//! controller; then for each size N:
//! - the limit run: the apiserver writes one message costs (create, claim,
//!   outcome) with no controller and no email;
//! - the operator run per transport: N messages created, waited on until
//!   Sent: throughput, create->Sent latency, controller CPU and peak RSS, and
//!   apiserver requests per message by verb;
//! - optionally a paced run at half the operator's rate, for latency;
//! - first, the cluster-shape run: the controller over every namespace of a
//!   cluster that holds thousands of large Secrets and ConfigMaps it never
//!   uses (time to the first Sent message, peak and steady RSS);
//! - last, the unsubscribe run: N one-click POSTs to the hosted unsubscribe
//!   endpoint over many namespaces, then N replays (requests/s, latency,
//!   unsubscribes lost, RSS).
//!
//! Figures go to `--out` (results.json, results.md, throughput.png,
//! latency.png) and the table to stdout. Usage: see `--help` or `make bench`.

mod apiserver;
mod cluster;
mod env;
mod history;
mod load;
mod process;
mod report;
mod unsubscribes;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use mailroom_fakes::{Config, Fake};
use serde_json::json;

use env::Env;
use report::Run;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Starting or driving the environment failed.
    #[error("{0}")]
    Setup(String),
    /// A Kubernetes API call failed.
    #[error("{0}: {1}")]
    Kube(&'static str, #[source] kube::Error),
}

#[derive(Parser)]
#[command(
    about = "mailroom's benchmark: throughput, latency, memory and apiserver cost against the control plane's limit"
)]
struct Args {
    /// Message counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    sizes: Vec<usize>,
    /// Transports for the operator runs: smtp (mailpit), api (the Postmark fake).
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("smtp"), String::from("api")])]
    transports: Vec<String>,
    /// Creates in flight at once, in the limit and operator runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Also run N=min(1000, smallest size) over the first transport paced at
    /// half the rate its operator run reached, for latency under load.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    paced: bool,
    /// The controller binary (a release build).
    #[arg(long, default_value = "target/release/mailroom")]
    controller: PathBuf,
    /// An extra flag for the controller (repeatable), e.g. `--sent-events=false`.
    #[arg(long = "controller-flag", allow_hyphen_values = true)]
    controller_flags: Vec<String>,
    /// The cluster-shape run: Secrets in an unrelated namespace (with
    /// `--shape-config-maps 0` as well, 0 skips the run).
    #[arg(long, default_value_t = 2000)]
    shape_secrets: usize,
    /// KiB of data in each of those Secrets.
    #[arg(long, default_value_t = 200)]
    shape_secret_kib: usize,
    /// The cluster-shape run: ConfigMaps in the unrelated namespace.
    #[arg(long, default_value_t = 2000)]
    shape_config_maps: usize,
    /// KiB of data in each of those ConfigMaps.
    #[arg(long, default_value_t = 50)]
    shape_config_map_kib: usize,
    /// The history run: finished messages in the namespace the controller
    /// starts over, ascending (empty skips the run).
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000, 100000])]
    history_sizes: Vec<usize>,
    /// New messages sent over the largest history.
    #[arg(long, default_value_t = 10000)]
    history_in_flight: usize,
    /// Delivery webhook events per new message.
    #[arg(long, default_value_t = 10)]
    history_events_per_message: usize,
    /// Events per webhook request (one, as Postmark, Resend and Mailgun
    /// post them; SendGrid batches them).
    #[arg(long, default_value_t = 1)]
    history_events_per_request: usize,
    /// The unsubscribe run: one-click POSTs in each round (0 skips the run).
    #[arg(long, default_value_t = 10000)]
    unsubscribe_posts: usize,
    /// Namespaces the unsubscribe POSTs are spread over (each within the
    /// default per-namespace rate's burst).
    #[arg(long, default_value_t = 20)]
    unsubscribe_namespaces: usize,
    /// Where the figures and plots go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    mailroom::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mailroom-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailroom-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench(args: Args) -> Result<(), Error> {
    let root = std::env::current_dir().map_err(|e| Error::Setup(e.to_string()))?;
    if !args.controller.exists() {
        return Err(Error::Setup(format!(
            "{} not found: build it with cargo build --release",
            args.controller.display()
        )));
    }
    let dir = std::env::temp_dir().join(format!("mailroom-bench-{}", std::process::id()));
    eprintln!(
        "starting the control plane and mailpit in {}",
        dir.display()
    );
    let env = Env::start(&root, &dir)?;
    let client = env.client().await?;
    let fake = Fake::start(Config::with_key("bench-key"))
        .await
        .map_err(|e| Error::Setup(format!("starting the API fakes: {e}")))?;

    // First, while no other run's messages are in the cluster: this run's
    // controller serves every namespace.
    let shape = cluster::Shape {
        secrets: args.shape_secrets,
        secret_bytes: args.shape_secret_kib * 1024,
        config_maps: args.shape_config_maps,
        config_map_bytes: args.shape_config_map_kib * 1024,
    };
    let shape_run = if shape.secrets + shape.config_maps > 0 {
        let run = cluster::run(
            &env,
            &client,
            &args.controller,
            &args.controller_flags,
            shape,
            100,
        )
        .await?;
        eprintln!(
            "cluster shape: first Sent after {:.1} s, peak RSS {:.1} MiB, steady {:.1} MiB",
            run.first_sent_seconds, run.peak_rss_mib, run.steady_rss_mib
        );
        Some(run)
    } else {
        None
    };

    let mut runs: Vec<Run> = Vec::new();
    for &n in &args.sizes {
        let run = limit(&client, &env.dir, n, args.concurrency).await?;
        eprintln!("limit N={n}: {:.1} msg/s", run.per_second);
        runs.push(run);
        for transport in &args.transports {
            let run = operator(&env, &client, &fake.url, &args, transport, n, None).await?;
            eprintln!(
                "operator {transport} N={n}: {:.1} msg/s, p99 {:.0} ms",
                run.per_second,
                run.latency_ms.map_or(0.0, |p| p.p99)
            );
            runs.push(run);
        }
    }
    if args.paced
        && let (Some(transport), Some(&smallest)) =
            (args.transports.first(), args.sizes.iter().min())
        && let Some(full) = runs
            .iter()
            .find(|r| r.kind == "operator" && &r.transport == transport && r.n == smallest)
    {
        let n = smallest.min(1000);
        let rate = full.per_second / 2.0;
        let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
        let run = operator(&env, &client, &fake.url, &args, transport, n, Some(every)).await?;
        eprintln!(
            "paced {transport} N={n} at {rate:.1} msg/s: p99 {:.0} ms",
            run.latency_ms.map_or(0.0, |p| p.p99)
        );
        runs.push(run);
    }
    report::write(&args.out, &runs)?;
    println!("{}", report::markdown(&runs));
    if let Some(run) = &shape_run {
        report::write_shape(&args.out, run)?;
        println!("{}", cluster::markdown(run));
    }
    if !args.history_sizes.is_empty() && args.history_sizes.iter().all(|&s| s > 0) {
        let mut sizes = args.history_sizes.clone();
        sizes.sort_unstable();
        let plan = history::Plan {
            sizes: &sizes,
            in_flight: args.history_in_flight,
            events_per_message: args.history_events_per_message,
            events_per_request: args.history_events_per_request,
            concurrency: args.concurrency,
            controller: &args.controller,
            flags: &args.controller_flags,
        };
        let run = history::run(&env, &client, &plan).await?;
        report::write_history(&args.out, &run)?;
        println!("{}", history::markdown(&run));
    }
    if args.unsubscribe_posts > 0 {
        let plan = unsubscribes::Plan {
            posts: args.unsubscribe_posts,
            namespaces: args.unsubscribe_namespaces,
            concurrency: args.concurrency,
            controller: &args.controller,
            flags: &args.controller_flags,
        };
        let run = unsubscribes::run(&env, &client, &plan).await?;
        report::write_unsubscribes(&args.out, &run)?;
        println!("{}", unsubscribes::markdown(&run));
    }
    println!("figures and plots in {}", args.out.display());
    Ok(())
}

/// CPU seconds spent per process between two readings.
fn cpu_spent(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, t)| (name.clone(), t - before.get(name).copied().unwrap_or(0.0)))
        .collect()
}

/// A suffix that makes this run's names its own.
pub fn suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    )
}

async fn limit(
    client: &Client,
    dir: &std::path::Path,
    n: usize,
    concurrency: usize,
) -> Result<Run, Error> {
    let ns = format!("bench-limit-{n}-{}", suffix());
    load::namespace(client, &ns).await?;
    let before = apiserver::counts(client).await?;
    let cpu_before = process::environment_cpu(dir);
    let seconds = load::limit_run(client, &ns, n, concurrency).await?;
    let cpu = cpu_spent(&cpu_before, &process::environment_cpu(dir));
    let after = apiserver::counts(client).await?;
    load::drop_namespace(client, &ns).await;
    let requests = apiserver::per_message(&before, &after, n);
    Ok(Run {
        kind: "limit".into(),
        transport: "none".into(),
        n,
        concurrency,
        seconds,
        per_second: n as f64 / seconds,
        latency_ms: None,
        controller: None,
        cpu_seconds: cpu,
        writes_per_message: apiserver::writes(&requests, "emailmessages"),
        event_writes_per_message: apiserver::writes(&requests, "events"),
        ledger_writes_per_message: apiserver::writes(&requests, "emailledgers"),
        requests_per_message: requests,
        sent_per_second: Vec::new(),
        latencies: Vec::new(),
    })
}

/// Creates provider `bench` for `transport` (and its Secret and CA).
async fn provider(
    env: &Env,
    client: &Client,
    ns: &str,
    fake_url: &str,
    transport: &str,
) -> Result<(), Error> {
    let spec = match transport {
        "smtp" => {
            load::create::<k8s_openapi::api::core::v1::Secret>(
                client,
                ns,
                json!({
                "metadata": {"name": "smtp"},
                "stringData": {"username": env.smtp_user.0, "password": env.smtp_user.1}}),
            )
            .await?;
            load::create::<k8s_openapi::api::core::v1::ConfigMap>(
                client,
                ns,
                json!({
                "metadata": {"name": "smtp-ca"}, "data": {"ca.crt": env.ca_pem}}),
            )
            .await?;
            let (host, port) = env.smtp.rsplit_once(':').unwrap_or((&env.smtp, "25"));
            json!({"smtp": {"host": host, "port": port.parse::<u16>().unwrap_or(25),
                            "caBundle": {"configMapKeyRef": {"name": "smtp-ca", "key": "ca.crt"}},
                            "auth": {"secretRef": {"name": "smtp"}}}})
        }
        "api" => {
            load::create::<k8s_openapi::api::core::v1::Secret>(
                client,
                ns,
                json!({
                "metadata": {"name": "api"}, "stringData": {"apiKey": "bench-key"}}),
            )
            .await?;
            json!({"api": {"provider": "Postmark", "secretRef": {"name": "api"}, "endpoint": fake_url}})
        }
        other => {
            return Err(Error::Setup(format!(
                "unknown transport {other:?}: smtp or api"
            )));
        }
    };
    let mut spec = spec;
    spec["defaultFrom"] = json!("bench <bench@mailroom.dev>");
    load::create::<mailroom::api::EmailProvider>(
        client,
        ns,
        json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
        "metadata": {"name": "bench"}, "spec": spec}),
    )
    .await?;
    Ok(())
}

async fn operator(
    env: &Env,
    client: &Client,
    fake_url: &str,
    args: &Args,
    transport: &str,
    n: usize,
    pace: Option<Duration>,
) -> Result<Run, Error> {
    let kind = if pace.is_some() { "paced" } else { "operator" };
    let ns = format!("bench-{kind}-{transport}-{n}-{}", suffix());
    load::namespace(client, &ns).await?;
    provider(env, client, &ns, fake_url, transport).await?;
    let log = env.dir.join(format!("{ns}.log"));
    let controller = process::Controller::start(
        &args.controller,
        &args.controller_flags,
        &env.kubeconfig,
        Some(&ns),
        &log,
    )?;
    load::provider_ready(client, &ns).await?;
    let before = apiserver::counts(client).await?;
    let cpu_before = process::environment_cpu(&env.dir);
    let controller_before = controller.usage().cpu_seconds;
    let (seconds, timings) = load::operator_run(client, &ns, n, args.concurrency, pace).await?;
    let mut cpu = cpu_spent(&cpu_before, &process::environment_cpu(&env.dir));
    let usage = controller.usage();
    cpu.insert("controller".into(), usage.cpu_seconds - controller_before);
    let after = apiserver::counts(client).await?;
    controller.stop();
    load::drop_namespace(client, &ns).await;
    let requests = apiserver::per_message(&before, &after, n);
    let latencies = timings.latencies();
    Ok(Run {
        kind: kind.into(),
        transport: transport.into(),
        n,
        concurrency: if pace.is_some() { 0 } else { args.concurrency },
        seconds,
        per_second: n as f64 / seconds,
        latency_ms: report::percentiles(&latencies),
        controller: Some(usage),
        cpu_seconds: cpu,
        writes_per_message: apiserver::writes(&requests, "emailmessages"),
        event_writes_per_message: apiserver::writes(&requests, "events"),
        ledger_writes_per_message: apiserver::writes(&requests, "emailledgers"),
        requests_per_message: requests,
        sent_per_second: report::per_second(timings.sent.values().copied()),
        latencies,
    })
}
