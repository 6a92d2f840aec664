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
//! - the service-latency run per transport: the API fake answering each
//!   send after a log-normal time (p50 150 ms, p99 600 ms by default) and
//!   mailpit behind a relay that holds each SMTP answer 50 ms, as real
//!   services over a network answer;
//! - first, the cluster-shape run: the controller over every namespace of a
//!   cluster that holds thousands of large Secrets and ConfigMaps it never
//!   uses (time to the first Sent message, peak and steady RSS);
//! - the bulk run: one message with 10,000 recipients through each
//!   service's batch endpoint (recipients/s, message writes per batch);
//! - last, the unsubscribe run: N one-click POSTs to the hosted unsubscribe
//!   endpoint over many namespaces, then N replays (requests/s, latency,
//!   unsubscribes lost, RSS).
//!
//! Figures go to `--out` (results.json, results.md, throughput.png,
//! latency.png) and the table to stdout. Usage: see `--help` or `make bench`.

mod apiserver;
mod bulk;
mod cluster;
mod cores;
mod env;
mod history;
mod load;
mod process;
mod report;
mod slow_smtp;
mod status_variants;
mod unsubscribes;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use mailroom_fakes::latency::Latency;
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
    /// Transports for the operator runs: smtp (mailpit), api (the Postmark
    /// fake: a claim and an outcome per message), resend (the Resend fake:
    /// idempotent, so the outcome alone).
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("smtp"), String::from("api"), String::from("resend")])]
    transports: Vec<String>,
    /// Creates in flight at once, in the limit and operator runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Also run N=min(1000, smallest size) over the first transport paced at
    /// half the rate its operator run reached, for latency under load.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    paced: bool,
    /// Messages per transport in the service-latency run (0 skips it).
    #[arg(long, default_value_t = 2000)]
    latency_n: usize,
    /// The API fake's answer time in the service-latency run: median and
    /// 99th percentile, milliseconds.
    #[arg(long, value_delimiter = ',', default_values_t = [150, 600])]
    api_latency_ms: Vec<u64>,
    /// How long the relay in front of mailpit holds each SMTP answer in the
    /// service-latency run, milliseconds.
    #[arg(long, default_value_t = 50)]
    smtp_reply_delay_ms: u64,
    /// `pool.maxConnections` of the SMTP providers the runs create (unset:
    /// the provider's default).
    #[arg(long)]
    smtp_pool: Option<u32>,
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
    /// The bulk run: recipients of the one message sent through each
    /// service's batch endpoint (0 skips the run).
    #[arg(long, default_value_t = 10000)]
    bulk_recipients: usize,
    /// The unsubscribe run: one-click POSTs in each round (0 skips the run).
    #[arg(long, default_value_t = 10000)]
    unsubscribe_posts: usize,
    /// Namespaces the unsubscribe POSTs are spread over (each within the
    /// default per-namespace rate's burst).
    #[arg(long, default_value_t = 20)]
    unsubscribe_namespaces: usize,
    /// Pin etcd and kube-apiserver to the first CPU and everything else
    /// (mailpit, the fakes, the load client, the controller) to the others,
    /// as in a cluster whose control plane has machines of its own.
    #[arg(long)]
    split_cores: bool,
    /// After each same-writes run, write the same statuses again less one
    /// part at a time (see `status_variants`): what slimming each part of
    /// a status would buy.
    #[arg(long)]
    status_variants: bool,
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
    let split = if args.split_cores {
        let split = cores::split(&env.dir)?;
        eprintln!(
            "etcd and kube-apiserver on CPU {}, everything else on CPUs {}",
            split.control_plane, split.rest
        );
        Some(split)
    } else {
        None
    };
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
        for watched in [false, true] {
            let run = limit(&client, &env.dir, n, args.concurrency, watched, None).await?;
            eprintln!("{} N={n}: {:.1} msg/s", run.kind, run.per_second);
            runs.push(run);
        }
        for transport in &args.transports {
            let servers = Servers {
                api: &fake.url,
                smtp: &env.smtp,
                smtp_pool: args.smtp_pool,
            };
            let run = operator(&env, &client, servers, &args, transport, n, Mode::Full).await?;
            eprintln!(
                "operator {transport} N={n}: {:.1} msg/s, p99 {:.0} ms",
                run.per_second,
                run.latency_ms.map_or(0.0, |p| p.p99)
            );
            let written = run.written.clone();
            runs.push(run);
            // The same writes, bodies and all, with no controller: what the
            // operator's own work costs beyond what its statuses cost.
            if let Some(written) = written {
                let mut same =
                    limit(&client, &env.dir, n, args.concurrency, true, Some(&written)).await?;
                same.transport = transport.clone();
                eprintln!(
                    "{} {transport} N={n}: {:.1} msg/s",
                    same.kind, same.per_second
                );
                runs.push(same);
                if args.status_variants {
                    for variant in status_variants::Variant::ALL {
                        let slim = variant.apply(&written);
                        let mut run =
                            limit(&client, &env.dir, n, args.concurrency, true, Some(&slim))
                                .await?;
                        run.kind = variant.kind();
                        run.transport = transport.clone();
                        eprintln!(
                            "{} {transport} N={n}: {:.1} msg/s, {:.0} bytes a Sent object",
                            run.kind, run.per_second, run.object_bytes
                        );
                        runs.push(run);
                    }
                }
            }
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
        let servers = Servers {
            api: &fake.url,
            smtp: &env.smtp,
            smtp_pool: args.smtp_pool,
        };
        let run = operator(
            &env,
            &client,
            servers,
            &args,
            transport,
            n,
            Mode::Paced(every),
        )
        .await?;
        eprintln!(
            "paced {transport} N={n} at {rate:.1} msg/s: p99 {:.0} ms",
            run.latency_ms.map_or(0.0, |p| p.p99)
        );
        runs.push(run);
    }
    if args.latency_n > 0 {
        latency_runs(&env, &client, &fake, &args, &mut runs).await?;
    }
    report::write(&args.out, &runs)?;
    if let Some(split) = &split {
        report::write_split(&args.out, split)?;
        println!(
            "etcd and kube-apiserver on CPU {}; mailpit, the fakes, the load client and the controller on CPUs {}\n",
            split.control_plane, split.rest
        );
    }
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
    if args.bulk_recipients > 0 {
        let plan = bulk::Plan {
            recipients: args.bulk_recipients,
            controller: &args.controller,
            flags: &args.controller_flags,
        };
        let runs = bulk::run(&env, &client, &fake, &plan).await?;
        report::write_bulk(&args.out, &runs)?;
        println!("{}", bulk::markdown(&runs));
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

/// The service-latency runs: each transport with its server answering as a
/// real one over a network does.
async fn latency_runs(
    env: &Env,
    client: &Client,
    fake: &Fake,
    args: &Args,
    runs: &mut Vec<Run>,
) -> Result<(), Error> {
    let (p50, p99) = match args.api_latency_ms.as_slice() {
        [p50, p99] => (*p50, *p99),
        _ => {
            return Err(Error::Setup(
                "--api-latency-ms takes a median and a 99th percentile".into(),
            ));
        }
    };
    let delay = Duration::from_millis(args.smtp_reply_delay_ms);
    let relay = slow_smtp::start(&env.smtp, delay)
        .await
        .map_err(|e| Error::Setup(format!("starting the SMTP relay: {e}")))?;
    fake.set_send_latency(Some(Latency::new(
        Duration::from_millis(p50),
        Duration::from_millis(p99),
    )));
    let servers = Servers {
        api: &fake.url,
        smtp: &relay,
        smtp_pool: args.smtp_pool,
    };
    for transport in &args.transports {
        let n = args.latency_n;
        let run = operator(env, client, servers, args, transport, n, Mode::Latency).await;
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                fake.set_send_latency(None);
                return Err(e);
            }
        };
        eprintln!(
            "service latency {transport} N={n}: {:.1} msg/s, p99 {:.0} ms",
            run.per_second,
            run.latency_ms.map_or(0.0, |p| p.p99)
        );
        runs.push(run);
    }
    fake.set_send_latency(None);
    Ok(())
}

/// Where the controller's providers send: the API fakes' URL and the SMTP
/// server's `host:port`, and the SMTP providers' pool size.
#[derive(Clone, Copy)]
struct Servers<'a> {
    api: &'a str,
    smtp: &'a str,
    smtp_pool: Option<u32>,
}

/// How an operator run creates its messages and what its servers do.
#[derive(Clone, Copy)]
enum Mode {
    /// All at once, `--concurrency` creates in flight.
    Full,
    /// One every so often.
    Paced(Duration),
    /// All at once, with the servers answering as real ones.
    Latency,
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
    watched: bool,
    same: Option<&load::Written>,
) -> Result<Run, Error> {
    let kind = match (same, watched) {
        (Some(_), _) => report::SAME_WRITES,
        (None, true) => "limit",
        (None, false) => "limit-unwatched",
    };
    let ns = format!("bench-{kind}-{n}-{}", suffix());
    load::namespace(client, &ns).await?;
    let before = apiserver::counts(client).await?;
    let cpu_before = process::environment_cpu(dir);
    let (seconds, object_bytes) =
        load::limit_run(client, &ns, n, concurrency, watched, same).await?;
    let cpu = cpu_spent(&cpu_before, &process::environment_cpu(dir));
    let after = apiserver::counts(client).await?;
    load::drop_namespace(client, &ns).await;
    let requests = apiserver::per_message(&before, &after, n);
    Ok(Run {
        kind: kind.into(),
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
        journal_writes_per_message: apiserver::writes(&requests, "emailjournals"),
        requests_per_message: requests,
        sent_per_second: Vec::new(),
        stages_ms: None,
        object_bytes,
        latencies: Vec::new(),
        written: None,
    })
}

/// Creates provider `bench` for `transport` (and its Secret and CA).
async fn provider(
    env: &Env,
    client: &Client,
    ns: &str,
    servers: Servers<'_>,
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
            let (host, port) = servers
                .smtp
                .rsplit_once(':')
                .unwrap_or((servers.smtp, "25"));
            json!({"smtp": {"host": host, "port": port.parse::<u16>().unwrap_or(25),
                            "caBundle": {"configMapKeyRef": {"name": "smtp-ca", "key": "ca.crt"}},
                            "auth": {"secretRef": {"name": "smtp"}}}})
        }
        "api" | "resend" => {
            load::create::<k8s_openapi::api::core::v1::Secret>(
                client,
                ns,
                json!({
                "metadata": {"name": "api"}, "stringData": {"apiKey": "bench-key"}}),
            )
            .await?;
            // Postmark stands for the services without an idempotency key
            // (a claim written before each send); Resend has one (no claim).
            let service = if transport == "api" {
                "Postmark"
            } else {
                "Resend"
            };
            json!({"api": {"provider": service, "secretRef": {"name": "api"}, "endpoint": servers.api}})
        }
        other => {
            return Err(Error::Setup(format!(
                "unknown transport {other:?}: smtp, api or resend"
            )));
        }
    };
    let mut spec = spec;
    if let (Some(pool), "smtp") = (servers.smtp_pool, transport) {
        spec["smtp"]["pool"] = json!({"maxConnections": pool});
    }
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
    servers: Servers<'_>,
    args: &Args,
    transport: &str,
    n: usize,
    mode: Mode,
) -> Result<Run, Error> {
    let (kind, pace) = match mode {
        Mode::Full => ("operator", None),
        Mode::Paced(every) => ("paced", Some(every)),
        Mode::Latency => ("latency", None),
    };
    let ns = format!("bench-{kind}-{transport}-{n}-{}", suffix());
    load::namespace(client, &ns).await?;
    provider(env, client, &ns, servers, transport).await?;
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
        journal_writes_per_message: apiserver::writes(&requests, "emailjournals"),
        requests_per_message: requests,
        sent_per_second: report::per_second(timings.sent.values().copied()),
        stages_ms: report::stages(timings.stages()),
        object_bytes: timings.mean_sent_bytes(),
        latencies,
        written: timings.written(),
    })
}
