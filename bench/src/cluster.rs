//! The cluster-shape run: the controller started over a cluster that holds
//! what real ones do besides mail (thousands of large Secrets, in the shape
//! of Helm's release records, and ConfigMaps) in namespaces it serves but
//! never uses. Reported: time from the process start to the first Sent
//! message, and the controller's peak and steady RSS.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use mailroom::api::{EmailMessage, Phase};
use serde::Serialize;
use serde_json::json;

use crate::env::Env;
use crate::{Error, load, process};

/// How many unrelated objects the cluster holds, and how large.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Shape {
    /// Opaque Secrets in another namespace.
    pub secrets: usize,
    /// Bytes of data in each Secret.
    pub secret_bytes: usize,
    /// ConfigMaps in another namespace.
    pub config_maps: usize,
    /// Bytes of data in each ConfigMap.
    pub config_map_bytes: usize,
}

/// The figures of one cluster-shape run.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeRun {
    /// What the cluster held.
    pub shape: Shape,
    /// Seconds it took to create the unrelated objects (not part of the figures).
    pub fill_seconds: f64,
    /// Seconds from the controller's start to its first message seen Sent.
    pub first_sent_seconds: f64,
    /// Messages sent after the first (to see the steady state).
    pub messages: usize,
    /// Peak RSS of the controller over the whole run, MiB.
    pub peak_rss_mib: f64,
    /// RSS once every message was Sent and the controller idled 5 s, MiB.
    pub steady_rss_mib: f64,
}

/// Fills namespace `bench-shape-objects` with `shape`'s objects, then runs
/// the controller over all namespaces: one message waiting at its start, then
/// `messages` more.
pub async fn run(
    env: &Env,
    client: &Client,
    controller: &std::path::Path,
    flags: &[String],
    shape: Shape,
    messages: usize,
) -> Result<ShapeRun, Error> {
    let suffix = crate::suffix();
    let objects = format!("bench-shape-objects-{suffix}");
    load::namespace(client, &objects).await?;
    let started = Instant::now();
    fill(client, &objects, shape).await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "cluster shape: {} Secrets of {} KiB and {} ConfigMaps of {} KiB created in {fill_seconds:.0} s",
        shape.secrets,
        shape.secret_bytes / 1024,
        shape.config_maps,
        shape.config_map_bytes / 1024
    );

    let ns = format!("bench-shape-{suffix}");
    load::namespace(client, &ns).await?;
    let servers = crate::Servers {
        api: "",
        smtp: &env.smtp,
        smtp_pool: None,
    };
    crate::provider(env, client, &ns, servers, "smtp").await?;
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &load::message(0)?)
        .await
        .map_err(|e| Error::Kube("create", e))?;

    let log = env.dir.join(format!("{ns}.log"));
    let started = Instant::now();
    let process = process::Controller::start(controller, flags, &env.kubeconfig, None, &log)?;
    sent(&api, 1, Duration::from_secs(300)).await?;
    let first_sent_seconds = started.elapsed().as_secs_f64();

    futures::stream::iter(1..=messages)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &load::message(i)?)
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::Kube("create", e))
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    sent(&api, messages + 1, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady_rss_mib = process.rss_mib();
    let peak_rss_mib = process.usage().peak_rss_mib;
    process.stop();
    load::drop_namespace(client, &ns).await;
    load::drop_namespace(client, &objects).await;
    Ok(ShapeRun {
        shape,
        fill_seconds,
        first_sent_seconds,
        messages,
        peak_rss_mib,
        steady_rss_mib,
    })
}

/// Creates the Secrets and ConfigMaps of `shape` in `namespace`, 8 at a time.
async fn fill(client: &Client, namespace: &str, shape: Shape) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secret_data = filler(shape.secret_bytes);
    let map_data = filler(shape.config_map_bytes);
    let creates = (0..shape.secrets)
        .map(|i| {
            let (secrets, data) = (secrets.clone(), secret_data.clone());
            futures::future::Either::Left(async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("release-{i:05}"),
                                 "labels": {"owner": "bench", "name": format!("release-{i:05}")}},
                    "type": "Opaque",
                    "stringData": {"release": data}}))
                .map_err(|e| Error::Setup(e.to_string()))?;
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::Kube("creating a Secret", e))
            })
        })
        .chain((0..shape.config_maps).map(|i| {
            let (maps, data) = (maps.clone(), map_data.clone());
            futures::future::Either::Right(async move {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("settings-{i:05}")},
                    "data": {"settings": data}}))
                .map_err(|e| Error::Setup(e.to_string()))?;
                maps.create(&PostParams::default(), &map)
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::Kube("creating a ConfigMap", e))
            })
        }));
    futures::stream::iter(creates)
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// `bytes` characters of text that does not compress to nothing.
fn filler(bytes: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// Waits until `n` messages of `api` are Sent, looking every 200 ms.
async fn sent(api: &Api<EmailMessage>, n: usize, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| Error::Kube("listing messages", e))?;
        let done = list
            .items
            .iter()
            .filter(|m| m.status.as_ref().and_then(|s| s.phase) == Some(Phase::Sent))
            .count();
        if done >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "cluster shape: {done} of {n} messages Sent within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The markdown table of a cluster-shape run.
pub fn markdown(run: &ShapeRun) -> String {
    let s = run.shape;
    format!(
        "| cluster holds | time to first Sent | peak RSS MiB | steady RSS MiB (after {} more) |\n|---|---|---|---|\n| {} Secrets of {} KiB, {} ConfigMaps of {} KiB | {:.1} s | {:.1} | {:.1} |\n",
        run.messages,
        s.secrets,
        s.secret_bytes / 1024,
        s.config_maps,
        s.config_map_bytes / 1024,
        run.first_sent_seconds,
        run.peak_rss_mib,
        run.steady_rss_mib
    )
}
