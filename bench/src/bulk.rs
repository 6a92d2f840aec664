//! The bulk run: one message with N recipients (10,000, the most a message
//! may list) through each service's batch endpoint, each service's fake in
//! turn. Figures: recipients per second from the create to Sent, the batch
//! requests the fake took, and the apiserver writes to the message per
//! batch (each batch is claimed and its outcome recorded).

use std::time::Instant;

use futures::TryStreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use mailroom::api::{EmailMessage, Phase};
use mailroom_fakes::{Fake, Service};
use serde::Serialize;
use serde_json::json;

use crate::env::Env;
use crate::{Error, apiserver, load, process};

/// What the run is asked for.
pub struct Plan<'a> {
    /// Recipients of the one message per service.
    pub recipients: usize,
    /// The controller binary.
    pub controller: &'a std::path::Path,
    /// Extra controller flags.
    pub flags: &'a [String],
}

/// One service's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BulkRun {
    /// The service.
    pub service: String,
    /// Recipients in the message.
    pub recipients: usize,
    /// Seconds from the create to the watch showing it Sent.
    pub seconds: f64,
    /// Recipients per second.
    pub per_second: f64,
    /// Batch requests the service's fake took.
    pub batches: usize,
    /// Emails the fake accepted.
    pub delivered: usize,
    /// apiserver writes to emailmessages (the create left out) per batch.
    pub writes_per_batch: f64,
}

/// Runs one bulk message through each service.
pub async fn run(
    env: &Env,
    client: &Client,
    fake: &Fake,
    plan: &Plan<'_>,
) -> Result<Vec<BulkRun>, Error> {
    let services = [
        Service::Resend,
        Service::Postmark,
        Service::Mailtrap,
        Service::SendGrid,
        Service::Mailgun,
    ];
    let mut runs = Vec::new();
    for service in services {
        let run = one(env, client, fake, plan, service).await?;
        eprintln!(
            "bulk {}: {} recipients in {:.1} s ({:.0}/s), {} batches, {:.2} writes per batch",
            run.service,
            run.recipients,
            run.seconds,
            run.per_second,
            run.batches,
            run.writes_per_batch
        );
        runs.push(run);
    }
    Ok(runs)
}

async fn one(
    env: &Env,
    client: &Client,
    fake: &Fake,
    plan: &Plan<'_>,
    service: Service,
) -> Result<BulkRun, Error> {
    let name = format!("{service:?}");
    let ns = format!("bench-bulk-{}-{}", name.to_lowercase(), crate::suffix());
    load::namespace(client, &ns).await?;
    load::create::<k8s_openapi::api::core::v1::Secret>(
        client,
        &ns,
        json!({"metadata": {"name": "api"}, "stringData": {"apiKey": "bench-key"}}),
    )
    .await?;
    let mut api = json!({"provider": name, "secretRef": {"name": "api"}, "endpoint": fake.url});
    if service == Service::Mailgun {
        api["mailgun"] = json!({"domain": "mg.example.com"});
    }
    load::create::<mailroom::api::EmailProvider>(
        client,
        &ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": "bench"},
               "spec": {"defaultFrom": "bench <bench@mailroom.dev>", "api": api}}),
    )
    .await?;
    let log = env.dir.join(format!("{ns}.log"));
    let controller = process::Controller::start(
        plan.controller,
        plan.flags,
        &env.kubeconfig,
        Some(&ns),
        &log,
    )?;
    load::provider_ready(client, &ns).await?;

    let posts_before = fake.posts().len();
    let delivered_before = fake.delivered();
    let before = apiserver::counts(client).await?;
    let recipients: Vec<serde_json::Value> = (0..plan.recipients)
        .map(|i| json!({"to": format!("user{i}@example.org")}))
        .collect();
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let watch = tokio::spawn(sent(api));
    load::create::<EmailMessage>(
        client,
        &ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
               "metadata": {"name": "newsletter"},
               "spec": {"providerRef": {"name": "bench"}, "subject": "News",
                        "text": "This month at mailroom...", "recipients": recipients}}),
    )
    .await?;
    let limit = std::time::Duration::from_secs(600);
    tokio::time::timeout(limit, watch)
        .await
        .map_err(|_| {
            Error::Setup(format!(
                "{name}: the bulk message was not Sent in {limit:?}"
            ))
        })?
        .map_err(|e| Error::Setup(format!("watch task: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = apiserver::counts(client).await?;
    controller.stop();
    load::drop_namespace(client, &ns).await;

    let batches = fake.posts().len() - posts_before;
    let writes = apiserver::writes(&apiserver::per_message(&before, &after, 1), "emailmessages");
    Ok(BulkRun {
        service: name,
        recipients: plan.recipients,
        seconds,
        per_second: plan.recipients as f64 / seconds,
        batches,
        delivered: fake.delivered() - delivered_before,
        // The create is the bench's own write, not the controller's.
        writes_per_batch: (writes - 1.0) / batches.max(1) as f64,
    })
}

/// Resolves when the watch shows message `newsletter` Sent.
async fn sent(api: Api<EmailMessage>) {
    let stream = watcher(api, watcher::Config::default());
    futures::pin_mut!(stream);
    while let Ok(Some(event)) = stream.try_next().await {
        if let watcher::Event::Apply(m) | watcher::Event::InitApply(m) = event
            && m.status.as_ref().and_then(|s| s.phase) == Some(Phase::Sent)
        {
            return;
        }
    }
}

/// The runs as markdown.
pub fn markdown(runs: &[BulkRun]) -> String {
    let mut out = String::from(
        "| service | recipients | seconds | recipients/s | batch requests | emails accepted | message writes per batch |\n|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {} | {} | {:.2} |\n",
            run.service,
            run.recipients,
            run.seconds,
            run.per_second,
            run.batches,
            run.delivered,
            run.writes_per_batch
        ));
    }
    out
}
