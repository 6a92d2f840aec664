//! The unsubscribe run: the release controller's hosted one-click endpoint
//! (on its webhook port) takes N unsubscribe POSTs spread over namespaces,
//! as mail clients send them, then the same N again (replays). Figures:
//! requests per second, latency percentiles, answers other than 200,
//! unsubscribes lost (POSTed and answered 200, but no EmailSuppression),
//! and the controller's RSS before, between and after the rounds.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ListParams};
use mailroom::api::EmailSuppression;
use mailroom::delivery::unsubscribe::token::{KeyRing, SealKey};
use serde::Serialize;
use serde_json::json;

use crate::env::Env;
use crate::{Error, load, process, report};

/// What the run is asked for.
pub struct Plan<'a> {
    /// Unsubscribe POSTs in each round.
    pub posts: usize,
    /// Namespaces they are spread over.
    pub namespaces: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The controller binary.
    pub controller: &'a std::path::Path,
    /// Extra controller flags.
    pub flags: &'a [String],
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// `first` or `replay`.
    pub round: String,
    /// POSTs made.
    pub posts: usize,
    /// Requests per second over the round.
    pub per_second: f64,
    /// Latency percentiles, ms.
    pub latency_ms: Option<report::Percentiles>,
    /// Answers by status code.
    pub answers: BTreeMap<u16, usize>,
    /// Controller RSS after the round, MiB.
    pub rss_after_mib: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct UnsubscribeRun {
    /// Namespaces the POSTs were spread over.
    pub namespaces: usize,
    /// Controller RSS before the first round, MiB.
    pub rss_before_mib: f64,
    /// The rounds.
    pub rounds: Vec<Round>,
    /// POSTs answered 200 whose EmailSuppression is missing.
    pub lost: usize,
    /// Controller peak RSS, MiB.
    pub peak_rss_mib: f64,
}

/// The key material the run's Secret holds (the bench seals the tokens a
/// sent mail would carry): 32 printable bytes.
const KEY: [u8; 32] = [b'*'; 32];

/// Runs it.
pub async fn run(env: &Env, client: &Client, plan: &Plan<'_>) -> Result<UnsubscribeRun, Error> {
    let stamp = crate::suffix();
    let home = format!("bench-unsub-home-{stamp}");
    load::namespace(client, &home).await?;
    load::create::<k8s_openapi::api::core::v1::Secret>(
        client,
        &home,
        json!({"metadata": {"name": "keys"},
               "stringData": {"current": String::from_utf8_lossy(&KEY)}}),
    )
    .await?;
    let namespaces: Vec<String> = (0..plan.namespaces.max(1))
        .map(|i| format!("bench-unsub-{i}-{stamp}"))
        .collect();
    for ns in &namespaces {
        load::namespace(client, ns).await?;
    }
    let (admin, webhook) = (crate::history::free_addr()?, crate::history::free_addr()?);
    let mut flags = plan.flags.to_vec();
    flags.extend(["--unsubscribe-key-secret".into(), format!("{home}/keys")]);
    let log = env.dir.join(format!("{home}.log"));
    let controller = process::Controller::start_on(
        plan.controller,
        &flags,
        &env.kubeconfig,
        None,
        &log,
        &admin,
        &webhook,
    )?;
    ready(&admin).await?;
    let keys = KeyRing {
        current: SealKey::new(&KEY).map_err(|e| Error::Setup(e.to_string()))?,
        previous: None,
    };
    let urls: Vec<(String, String, String)> = (0..plan.posts)
        .map(|i| {
            let ns = &namespaces[i % namespaces.len()];
            let address = format!("reader{i}@example.org");
            let token = keys.seal(ns, "news", &address);
            let url = format!("http://{webhook}/unsubscribe/{ns}/news/{token}");
            (url, ns.clone(), address)
        })
        .collect();
    let rss_before = controller.rss_mib();
    let mut rounds = Vec::new();
    for round in ["first", "replay"] {
        let began = Instant::now();
        let answers = post_all(&urls, plan.concurrency).await;
        let seconds = began.elapsed().as_secs_f64();
        let mut times: Vec<f64> = answers.iter().map(|(_, t)| *t).collect();
        times.sort_by(f64::total_cmp);
        let mut by_code = BTreeMap::new();
        for (code, _) in &answers {
            *by_code.entry(*code).or_insert(0) += 1;
        }
        rounds.push(Round {
            round: round.into(),
            posts: urls.len(),
            per_second: urls.len() as f64 / seconds,
            latency_ms: report::percentiles(&times),
            answers: by_code,
            rss_after_mib: controller.rss_mib(),
        });
    }
    let mut recorded = 0;
    for ns in &namespaces {
        let api: Api<EmailSuppression> = Api::namespaced(client.clone(), ns);
        recorded += api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::Kube("listing suppressions", e))?
            .items
            .len();
    }
    let answered = rounds
        .first()
        .map_or(0, |r| r.answers.get(&200).copied().unwrap_or(0));
    let run = UnsubscribeRun {
        namespaces: namespaces.len(),
        rss_before_mib: rss_before,
        lost: answered.saturating_sub(recorded),
        rounds,
        peak_rss_mib: controller.usage().peak_rss_mib,
    };
    controller.stop();
    for ns in namespaces.iter().chain(std::iter::once(&home)) {
        load::drop_namespace(client, ns).await;
    }
    Ok(run)
}

async fn ready(admin: &str) -> Result<(), Error> {
    let http = reqwest::Client::new();
    let url = format!("http://{admin}/readyz");
    let began = Instant::now();
    while began.elapsed().as_secs() < 120 {
        if let Ok(answer) = http.get(&url).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(Error::Setup(
        "the controller was not ready within 120 s".into(),
    ))
}

/// POSTs each URL once, as a mail client does (no retry): each answer's
/// status code and latency (s).
async fn post_all(urls: &[(String, String, String)], concurrency: usize) -> Vec<(u16, f64)> {
    let http = reqwest::Client::new();
    futures::stream::iter(urls)
        .map(|(url, _, _)| {
            let http = http.clone();
            async move {
                let started = Instant::now();
                let code = http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("List-Unsubscribe=One-Click")
                    .send()
                    .await
                    .map(|a| a.status().as_u16())
                    .unwrap_or(0);
                (code, started.elapsed().as_secs_f64())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The run as markdown.
pub fn markdown(run: &UnsubscribeRun) -> String {
    let mut out = format!(
        "Unsubscribe POSTs over {} namespaces (controller RSS before: {:.1} MiB):\n\n| round | POSTs | per second | p50 (ms) | p99 (ms) | max (ms) | answers | RSS after (MiB) |\n|---|---|---|---|---|---|---|---|\n",
        run.namespaces, run.rss_before_mib
    );
    for r in &run.rounds {
        let p = r.latency_ms.as_ref();
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:?} | {:.1} |\n",
            r.round,
            r.posts,
            r.per_second,
            p.map_or(0.0, |p| p.p50),
            p.map_or(0.0, |p| p.p99),
            p.map_or(0.0, |p| p.max),
            r.answers,
            r.rss_after_mib
        ));
    }
    out.push_str(&format!(
        "\n{} lost (answered 200 without an EmailSuppression); peak RSS {:.1} MiB.\n",
        run.lost, run.peak_rss_mib
    ));
    out
}
