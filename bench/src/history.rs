//! The history run: the controller started over a namespace that already
//! holds many finished messages (1k, 10k, 100k by default), each time
//! measuring the time from its start to ready (`/readyz`) and its peak RSS;
//! then, over the largest history, new messages sent through it
//! (throughput, create->Sent p99, RSS) and a burst of delivery webhook
//! events for them (events/s, receiver p99, none lost, RSS before and
//! after). The provider is the SendGrid fake, whose webhook posts events in
//! batches. At each start the controller records the history it finds in
//! its ledger (the messages predate it): the time that takes, the pages
//! written and their size are the ledger's cost at that history size.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use mailroom::api::{EmailMessage, EmailMessageStatus, Phase};
use mailroom_fakes::webhook::{Event, Happened, Signer};
use mailroom_fakes::{Fake, Service};
use serde::Serialize;
use serde_json::json;

use crate::env::Env;
use crate::{Error, load, process, report};

/// What the history run is asked for.
pub struct Plan<'a> {
    /// History sizes, ascending: finished messages in the namespace.
    pub sizes: &'a [usize],
    /// New messages sent over the largest history.
    pub in_flight: usize,
    /// Delivery events per new message.
    pub events_per_message: usize,
    /// Events per webhook request.
    pub events_per_request: usize,
    /// Requests (and creates) in flight at once.
    pub concurrency: usize,
    /// The controller binary and its extra flags.
    pub controller: &'a std::path::Path,
    /// Extra controller flags.
    pub flags: &'a [String],
}

/// The controller started over one history size.
#[derive(Debug, Clone, Serialize)]
pub struct Start {
    /// Finished messages in the namespace.
    pub history: usize,
    /// Seconds from the process start to `/readyz` answering 200.
    pub ready_seconds: f64,
    /// Peak RSS by then, MiB.
    pub peak_rss_mib: f64,
    /// Seconds from ready until the ledger held every finished message.
    pub ledger_seconds: f64,
    /// Ledger pages (EmailLedger objects) then.
    pub ledger_pages: usize,
    /// Their size as JSON, bytes.
    pub ledger_bytes: usize,
    /// Peak RSS once the ledger was written, MiB.
    pub peak_rss_after_ledger_mib: f64,
}

/// Figures of the sends and events over the largest history.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// Finished messages in the namespace.
    pub history: usize,
    /// New messages sent.
    pub messages: usize,
    /// Their messages per second.
    pub per_second: f64,
    /// Create->Sent p99, ms.
    pub p99_ms: f64,
    /// Peak RSS after the sends, MiB.
    pub peak_rss_after_sends_mib: f64,
    /// Delivery events posted.
    pub events: usize,
    /// Events per second, over the whole burst.
    pub events_per_second: f64,
    /// Receiver answer p99 per request, ms.
    pub receiver_p99_ms: f64,
    /// Requests answered other than 200 (each was posted again).
    pub retried: usize,
    /// Recorded events missing from status afterwards.
    pub lost: usize,
    /// RSS before and after the burst, MiB.
    pub rss_before_events_mib: f64,
    /// RSS after the burst, MiB.
    pub rss_after_events_mib: f64,
    /// Peak RSS over the whole run, MiB.
    pub peak_rss_mib: f64,
}

/// The whole history run.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRun {
    /// One start per history size.
    pub starts: Vec<Start>,
    /// The load over the largest.
    pub load: Load,
}

/// A finished message of the history.
fn finished(i: usize) -> Result<EmailMessage, Error> {
    let object = json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
        "metadata": {"name": format!("h-{i:06}")},
        "spec": {"providerRef": {"name": "bench"}, "to": [format!("old{i}@example.org")],
                 "subject": format!("history {i}"), "text": "a message sent long ago"}
    });
    serde_json::from_value(object).map_err(|e| Error::Setup(format!("message JSON: {e}")))
}

/// Adds finished messages `from..to` (created, then marked Sent).
async fn fill(
    client: &Client,
    ns: &str,
    from: usize,
    to: usize,
    concurrency: usize,
) -> Result<(), Error> {
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(from..to)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut created = api
                    .create(&PostParams::default(), &finished(i)?)
                    .await
                    .map_err(|e| Error::Kube("creating history", e))?;
                created.status = Some(EmailMessageStatus {
                    phase: Some(Phase::Sent),
                    attempts: 1,
                    sent_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::now(),
                    )),
                    ..Default::default()
                });
                api.replace_status(&created.name_any(), &PostParams::default(), &created)
                    .await
                    .map_err(|e| Error::Kube("marking history Sent", e))?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Waits until the ledger pages in `ns` hold `size` entries; returns the
/// seconds that took, the pages and their JSON size.
async fn ledger_filled(
    client: &Client,
    ns: &str,
    size: usize,
) -> Result<(f64, usize, usize), Error> {
    let api: Api<mailroom::api::EmailLedger> = Api::namespaced(client.clone(), ns);
    let began = Instant::now();
    loop {
        let pages = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::Kube("listing ledger pages", e))?
            .items;
        let entries: usize = pages.iter().map(|p| p.spec.entries.len()).sum();
        if entries >= size {
            let bytes = pages
                .iter()
                .map(|p| serde_json::to_vec(p).map_or(0, |b| b.len()))
                .sum();
            return Ok((began.elapsed().as_secs_f64(), pages.len(), bytes));
        }
        if began.elapsed() > Duration::from_secs(600) {
            return Err(Error::Setup(format!(
                "the ledger holds {entries} of {size} entries after 600 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts the controller and waits for `/readyz`.
async fn start(
    env: &Env,
    plan: &Plan<'_>,
    ns: &str,
    admin: &str,
    webhook: &str,
    history: usize,
) -> Result<(process::Controller, Start), Error> {
    let log = env.dir.join(format!("{ns}-{history}.log"));
    let started = Instant::now();
    let mut controller = process::Controller::start_on(
        plan.controller,
        plan.flags,
        &env.kubeconfig,
        Some(ns),
        &log,
        admin,
        webhook,
    )?;
    let http = reqwest::Client::new();
    let url = format!("http://{admin}/readyz");
    loop {
        if let Ok(answer) = http.get(&url).send().await
            && answer.status().is_success()
        {
            break;
        }
        if let Some(exit) = controller.exited() {
            return Err(Error::Setup(format!(
                "the controller exited ({exit}); see {}",
                log.display()
            )));
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(Error::Setup(format!(
                "not ready 600 s after its start over {history}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Start {
        history,
        ready_seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: controller.usage().peak_rss_mib,
        ledger_seconds: 0.0,
        ledger_pages: 0,
        ledger_bytes: 0,
        peak_rss_after_ledger_mib: 0.0,
    };
    Ok((controller, start))
}

/// A free local address, `127.0.0.1:port`.
pub fn free_addr() -> Result<String, Error> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Setup(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Setup(e.to_string()))?;
    Ok(addr.to_string())
}

/// The SendGrid provider `bench` with its webhook key; answers the signer.
async fn provider(client: &Client, ns: &str, fake: &Fake) -> Result<Signer, Error> {
    let signer = Signer::generate(Service::SendGrid);
    load::create::<k8s_openapi::api::core::v1::Secret>(
        client,
        ns,
        json!({"metadata": {"name": "api"}, "stringData": {"apiKey": "bench-key"}}),
    )
    .await?;
    load::create::<k8s_openapi::api::core::v1::Secret>(
        client,
        ns,
        json!({"metadata": {"name": "hooks"}, "stringData": signer.secret_data()}),
    )
    .await?;
    load::create::<mailroom::api::EmailProvider>(
        client,
        ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": "bench"},
               "spec": {"defaultFrom": "bench <bench@mailroom.dev>",
                        "api": {"provider": "SendGrid", "secretRef": {"name": "api"}, "endpoint": fake.url},
                        "webhook": {"secretRef": {"name": "hooks"}}}}),
    )
    .await?;
    Ok(signer)
}

/// The events of each sent message, as the service would post them.
fn events_for(fake: &Fake, per_message: usize) -> Vec<Event> {
    const KINDS: [Happened; 4] = [
        Happened::Delivered,
        Happened::Opened,
        Happened::Clicked,
        Happened::Opened,
    ];
    let at = jiff::Timestamp::now().as_second() - 600;
    let mut by_message: Vec<Vec<Event>> = Vec::new();
    for request in fake.accepted() {
        let id = request.id.clone().unwrap_or_default();
        for (to, echoed) in mailroom_fakes::echo::items(&request) {
            let events = (0..per_message)
                .map(|k| {
                    Event::new(KINDS[k % KINDS.len()], &id, &to, at + k as i64)
                        .echoing(echoed.clone())
                })
                .collect();
            by_message.push(events);
        }
    }
    // In time order across messages, as a service posts them: every
    // message's first event, then every second one, and so on.
    let mut out = Vec::new();
    for k in 0..per_message {
        for events in &by_message {
            if let Some(e) = events.get(k) {
                out.push(e.clone());
            }
        }
    }
    out
}

/// How long a request is retried, as a service retries (theirs go on for
/// hours; the run waits this long).
const RETRY_FOR: Duration = Duration::from_secs(900);

/// Posts `events` in batches; answers each request's latency (s) and how
/// many were answered other than 200 (posted again with a growing pause,
/// as the service would, for up to `RETRY_FOR`).
async fn post_all(
    url: &str,
    signer: &Signer,
    events: &[Event],
    per_request: usize,
    concurrency: usize,
) -> (Vec<f64>, usize) {
    let http = reqwest::Client::new();
    let results: Vec<(Vec<f64>, usize)> = futures::stream::iter(events.chunks(per_request.max(1)))
        .map(|chunk| {
            let http = http.clone();
            async move {
                let (mut times, mut retried) = (Vec::new(), 0);
                let (began, mut pause) = (Instant::now(), Duration::from_millis(500));
                while began.elapsed() < RETRY_FOR {
                    // Signed at each attempt, as the service does.
                    let now = jiff::Timestamp::now().as_second();
                    let Some(request) = signer.requests(chunk, now).into_iter().next() else {
                        break;
                    };
                    let mut builder = http.post(url).body(request.body.clone());
                    for (name, value) in &request.headers {
                        builder = builder.header(name, value);
                    }
                    let started = Instant::now();
                    let status = builder
                        .send()
                        .await
                        .map(|a| a.status().as_u16())
                        .unwrap_or(0);
                    times.push(started.elapsed().as_secs_f64());
                    if status == 200 {
                        break;
                    }
                    retried += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                (times, retried)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut times: Vec<f64> = results
        .iter()
        .flat_map(|(t, _)| t.iter().copied())
        .collect();
    times.sort_by(f64::total_cmp);
    (times, results.iter().map(|(_, r)| r).sum())
}

/// Events posted but missing from the messages' status.
async fn lost(client: &Client, ns: &str, events: &[Event]) -> Result<usize, Error> {
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), ns);
    let mut recorded: HashMap<String, usize> = HashMap::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| Error::Kube("listing messages", e))?;
        for m in &page.items {
            if let Some(status) = &m.status {
                *recorded.entry(m.name_any()).or_default() += status.delivery_events.len();
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    let mut expected: HashMap<String, usize> = HashMap::new();
    for e in events {
        if let Some(name) = e.metadata.get("mailroom-name") {
            *expected.entry(name.replace('_', ".")).or_default() += 1;
        }
    }
    Ok(expected
        .iter()
        .map(|(name, want)| want.saturating_sub(*recorded.get(name).unwrap_or(&0)))
        .sum())
}

/// The history run.
pub async fn run(env: &Env, client: &Client, plan: &Plan<'_>) -> Result<HistoryRun, Error> {
    let ns = format!("bench-history-{}", crate::suffix());
    load::namespace(client, &ns).await?;
    let fake = Fake::start(mailroom_fakes::Config::with_key("bench-key"))
        .await
        .map_err(|e| Error::Setup(format!("starting the fake: {e}")))?;
    let signer = provider(client, &ns, &fake).await?;
    let mut starts = Vec::new();
    let mut filled = 0;
    let largest = plan.sizes.iter().copied().max().unwrap_or(0);
    let (admin, webhook) = (free_addr()?, free_addr()?);
    let mut last = None;
    for &size in plan.sizes {
        let began = Instant::now();
        fill(client, &ns, filled, size, plan.concurrency).await?;
        eprintln!(
            "history: {size} finished messages ({:.0} s to fill)",
            began.elapsed().as_secs_f64()
        );
        filled = size;
        let (controller, mut start) = start(env, plan, &ns, &admin, &webhook, size).await?;
        let (seconds, pages, bytes) = ledger_filled(client, &ns, size).await?;
        start.ledger_seconds = seconds;
        start.ledger_pages = pages;
        start.ledger_bytes = bytes;
        start.peak_rss_after_ledger_mib = controller.usage().peak_rss_mib;
        eprintln!(
            "history {size}: ready {:.1} s after its start, peak RSS {:.1} MiB; ledger {pages} pages, {:.1} MiB, written {seconds:.1} s after ready, peak RSS then {:.1} MiB",
            start.ready_seconds,
            start.peak_rss_mib,
            bytes as f64 / 1048576.0,
            start.peak_rss_after_ledger_mib
        );
        starts.push(start);
        if size == largest {
            last = Some(controller);
        } else {
            controller.stop();
        }
    }
    let controller = last.ok_or_else(|| Error::Setup("no history size".into()))?;
    load::provider_ready(client, &ns).await?;
    let (seconds, timings) =
        load::operator_run(client, &ns, plan.in_flight, plan.concurrency, None).await?;
    let latencies = timings.latencies();
    let p99_ms = report::percentiles(&latencies).map_or(0.0, |p| p.p99);
    let peak_after_sends = controller.usage().peak_rss_mib;
    eprintln!(
        "history {largest}: {} new messages at {:.1} msg/s, p99 {p99_ms:.0} ms, peak RSS {peak_after_sends:.1} MiB",
        plan.in_flight,
        plan.in_flight as f64 / seconds
    );

    let events = events_for(&fake, plan.events_per_message);
    let url = format!("http://{webhook}/webhooks/{ns}/bench");
    let rss_before = controller.rss_mib();
    let began = Instant::now();
    let (times, retried) = post_all(
        &url,
        &signer,
        &events,
        plan.events_per_request,
        plan.concurrency,
    )
    .await;
    let burst = began.elapsed().as_secs_f64();
    let rss_after = controller.rss_mib();
    let receiver_p99_ms = report::percentiles(&times).map_or(0.0, |p| p.p99);
    let lost = lost(client, &ns, &events).await?;
    eprintln!(
        "history {largest}: {} events in {burst:.1} s ({:.0}/s), receiver p99 {receiver_p99_ms:.0} ms, {lost} lost, RSS {rss_before:.1} -> {rss_after:.1} MiB",
        events.len(),
        events.len() as f64 / burst
    );
    let load = Load {
        history: largest,
        messages: plan.in_flight,
        per_second: plan.in_flight as f64 / seconds,
        p99_ms,
        peak_rss_after_sends_mib: peak_after_sends,
        events: events.len(),
        events_per_second: events.len() as f64 / burst,
        receiver_p99_ms,
        retried,
        lost,
        rss_before_events_mib: rss_before,
        rss_after_events_mib: rss_after,
        peak_rss_mib: controller.usage().peak_rss_mib,
    };
    controller.stop();
    load::drop_namespace(client, &ns).await;
    Ok(HistoryRun { starts, load })
}

/// The run as markdown.
pub fn markdown(run: &HistoryRun) -> String {
    let mut out = String::from(
        "| finished messages | ready after start (s) | controller peak RSS (MiB) | ledger recorded after ready (s) | ledger pages | ledger size (MiB) | peak RSS after (MiB) |\n|---|---|---|---|---|---|---|\n",
    );
    for s in &run.starts {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.1} |\n",
            s.history,
            s.ready_seconds,
            s.peak_rss_mib,
            s.ledger_seconds,
            s.ledger_pages,
            s.ledger_bytes as f64 / 1048576.0,
            s.peak_rss_after_ledger_mib
        ));
    }
    let l = &run.load;
    out.push_str(&format!(
        "\nOver {} finished: {} new messages at {:.1} msg/s (create->Sent p99 {:.0} ms), peak RSS {:.1} MiB; \
         {} webhook events at {:.0}/s (receiver p99 {:.0} ms, {} requests retried, {} lost), \
         RSS {:.1} -> {:.1} MiB, peak {:.1} MiB.\n",
        l.history,
        l.messages,
        l.per_second,
        l.p99_ms,
        l.peak_rss_after_sends_mib,
        l.events,
        l.events_per_second,
        l.receiver_p99_ms,
        l.retried,
        l.lost,
        l.rss_before_events_mib,
        l.rss_after_events_mib,
        l.peak_rss_mib
    ));
    out
}
