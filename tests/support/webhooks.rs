//! The delivery webhook receiver in a test: started in this process for
//! one namespace, a provider's webhook set up with a fresh signing key, and
//! requests posted as the services post them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use mailroom::admin::Telemetry;
use mailroom::api::EmailProvider;
use mailroom_fakes::Service;
use mailroom_fakes::webhook::{Happened, Request, Signer};
use serde_json::json;

use super::fixtures::{Scene, create};

/// What the burst tests report about each message: delivered, opened
/// twice, clicked twice (one second apart).
pub const BURST_EVENTS: [Happened; 5] = [
    Happened::Delivered,
    Happened::Opened,
    Happened::Opened,
    Happened::Clicked,
    Happened::Clicked,
];

/// Gives provider `name` a webhook whose key is in a new Secret
/// `{name}-webhook`; answers the service's signer for it.
pub async fn webhook_provider(scene: &Scene, service: Service, name: &str) -> Signer {
    let signer = Signer::generate(service);
    let secret = format!("{name}-webhook");
    create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": secret}, "stringData": signer.secret_data()}),
    )
    .await;
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let webhook = json!({"spec": {"webhook": {"secretRef": {"name": secret}}}});
    providers
        .patch(name, &PatchParams::default(), &Patch::Merge(&webhook))
        .await
        .expect("adding the webhook");
    signer
}

/// The webhook receiver, in this process, for one namespace.
pub struct Receiver {
    /// `http://addr/webhooks/{namespace}`.
    pub base: String,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    telemetry: Arc<Telemetry>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Starts one for the scene's namespace that uses `client`.
    pub async fn start(scene: &Scene, client: Client) -> Self {
        Self::start_with(scene, client, None).await
    }

    /// Starts one that also serves ClusterEmailProviders, whose Secrets are
    /// in `cluster_namespace`.
    pub async fn start_with(
        scene: &Scene,
        client: Client,
        cluster_namespace: Option<String>,
    ) -> Self {
        let settings = mailroom::webhook::Settings {
            namespace: Some(scene.ns.clone()),
            cluster_provider_namespace: cluster_namespace,
            // Tests post right after they see Sent; under the load of the
            // parallel tests the watch may take longer than the default.
            unknown_grace_seconds: 5,
            ..Default::default()
        };
        Self::start_with_settings(scene, client, settings).await
    }

    /// Starts one with `settings` (the scene's namespace in them).
    pub async fn start_with_settings(
        scene: &Scene,
        client: Client,
        settings: mailroom::webhook::Settings,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let addr = listener.local_addr().expect("address");
        let telemetry = Arc::new(Telemetry::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(mailroom::webhook::serve(
            listener,
            client,
            settings,
            telemetry.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            base: format!("http://{addr}/webhooks/{}", scene.ns),
            addr,
            telemetry,
            _stop: stop,
        }
    }

    /// A metric's value: the sum over series whose labels contain `labels`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.telemetry
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Posts one request as the service would, answering its status. Like the
/// services, it tries again on 503 (the receiver is still listing, or asks
/// for a retry).
pub async fn post(http: &reqwest::Client, url: &str, request: &Request) -> u16 {
    post_timed(http, url, request).await.0
}

/// Like [`post`], answering also how long the last try took and how many
/// tries it took.
pub async fn post_timed(
    http: &reqwest::Client,
    url: &str,
    request: &Request,
) -> (u16, Duration, u32) {
    for tries in 1..=100 {
        let started = std::time::Instant::now();
        let mut builder = http.post(url).body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let status = builder.send().await.expect("posting").status().as_u16();
        if status != 503 {
            return (status, started.elapsed(), tries);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} answered 503 for 10 s");
}

/// Posts `body_len` bytes of JSON-ish body to `url` over a raw connection
/// and answers the status code the server sent, even when it answers and
/// closes before it has read the whole body (as it does past its limit,
/// where an HTTP client would see only the broken pipe).
pub async fn post_oversized(url: &str, body_len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_once('/').expect("a path");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connecting");
    let head = format!(
        "POST /{path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&vec![b' '; body_len]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
