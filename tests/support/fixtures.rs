//! Objects tests create: the controller running in-process for one namespace,
//! Secrets and providers pointing at mailpit, messages, and extra mailpit
//! servers with other settings.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use mailroom::api::{EmailMessage, EmailProvider};
use mailroom::controller::Settings;
use serde_json::{Value, json};

use super::{env, eventually};

/// The controller, running in this test's runtime and watching one namespace.
pub struct RunningController {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl RunningController {
    /// Starts a controller for `namespace`.
    pub async fn start(namespace: &str) -> Self {
        Self::start_with(super::client().await, namespace)
    }

    /// Starts a controller for `namespace` that uses `client` (e.g. one that
    /// impersonates the controller's ServiceAccount).
    pub fn start_with(client: Client, namespace: &str) -> Self {
        Self::start_with_settings(client, settings(namespace))
    }

    /// Starts a controller with `settings`.
    pub fn start_with_settings(client: Client, settings: Settings) -> Self {
        // MAILROOM_TEST_LOG=debug (say) shows the in-process controllers' logs.
        if let Ok(filter) = std::env::var("MAILROOM_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let telemetry = std::sync::Arc::new(mailroom::admin::Telemetry::default());
        let handle = tokio::spawn(mailroom::controller::run(
            client,
            settings,
            telemetry,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            // A controller that does not stop is a bug: say so rather than
            // hang the test run.
            tokio::time::timeout(Duration::from_secs(60), handle)
                .await
                .expect("the controller did not stop within 60 s of its shutdown")
                .expect("the controller task panicked");
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// The hosts of the local API fakes, which tests name as endpoint overrides.
pub const FAKE_HOSTS: &str = "127.0.0.1";

/// The settings of a test's controller for `namespace`: the defaults, with
/// the local fakes allowed as endpoint overrides.
pub fn settings(namespace: &str) -> Settings {
    Settings {
        namespace: Some(namespace.to_string()),
        allowed_endpoint_hosts: vec![FAKE_HOSTS.to_string()],
        ..Settings::default()
    }
}

/// Creates an object from JSON in `namespace`.
pub async fn create<K>(client: &Client, namespace: &str, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("object JSON");
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("creating the object")
}

/// The Secret holding mailpit's SMTP credentials, as `name`.
pub async fn smtp_secret(client: &Client, namespace: &str, name: &str, password: &str) -> Secret {
    create(
        client,
        namespace,
        json!({
            "metadata": {"name": name},
            "stringData": {"username": env().smtp_username, "password": password}
        }),
    )
    .await
}

/// The ConfigMap `smtp-ca` with the CA that signed mailpit's certificate.
pub async fn ca_config_map(client: &Client, namespace: &str) -> ConfigMap {
    create(
        client,
        namespace,
        json!({"metadata": {"name": "smtp-ca"}, "data": {"ca.crt": env().ca_pem}}),
    )
    .await
}

/// The SMTP spec of the shared mailpit: STARTTLS, the local CA, AUTH from
/// Secret `secret`.
pub fn mailpit_smtp(secret: &str) -> Value {
    let (host, port) = env().smtp.rsplit_once(':').expect("host:port");
    json!({
        "host": host,
        "port": port.parse::<u16>().expect("port"),
        "caBundle": {"configMapKeyRef": {"name": "smtp-ca", "key": "ca.crt"}},
        "auth": {"secretRef": {"name": secret}},
        "timeoutSeconds": 10
    })
}

/// A provider `name` with the given SMTP spec.
pub async fn provider(client: &Client, namespace: &str, name: &str, smtp: Value) -> EmailProvider {
    create(
        client,
        namespace,
        json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
            "metadata": {"name": name},
            "spec": {"defaultFrom": "mailroom tests <tests@mailroom.dev>", "smtp": smtp}
        }),
    )
    .await
}

/// A provider `mailpit` for the shared mailpit, with its Secret and CA.
pub async fn mailpit_provider(client: &Client, namespace: &str) -> EmailProvider {
    smtp_secret(client, namespace, "smtp-credentials", &env().smtp_password).await;
    ca_config_map(client, namespace).await;
    provider(
        client,
        namespace,
        "mailpit",
        mailpit_smtp("smtp-credentials"),
    )
    .await
}

/// Creates an EmailMessage `name` with `spec`.
pub async fn message(client: &Client, namespace: &str, name: &str, spec: Value) -> EmailMessage {
    create(
        client,
        namespace,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage", "metadata": {"name": name}, "spec": spec}),
    )
    .await
}

/// Waits until `check` holds for the provider, and returns it.
pub async fn wait_provider(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&EmailProvider) -> bool,
) -> EmailProvider {
    wait_provider_for(
        client,
        namespace,
        name,
        what,
        Duration::from_secs(30),
        check,
    )
    .await
}

/// Like [`wait_provider`], waiting up to `timeout`.
pub async fn wait_provider_for(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&EmailProvider) -> bool,
) -> EmailProvider {
    let api: Api<EmailProvider> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("provider {name} {what}"), timeout, || async {
        api.get(name).await.ok().filter(|p| check(p))
    })
    .await
}

/// Waits until `check` holds for the message, and returns it.
pub async fn wait_message(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&EmailMessage) -> bool,
) -> EmailMessage {
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("message {name} {what}"),
        Duration::from_secs(30),
        || async { api.get(name).await.ok().filter(|m| check(m)) },
    )
    .await
}

/// The reason of condition `type_` on a provider or message.
pub fn reason_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// A provider's condition `type_`: its status, reason and message (empty
/// when it has none).
pub fn condition_of(p: &EmailProvider, type_: &str) -> (String, String, String) {
    p.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// The Ready reason of a provider.
pub fn ready_reason(p: &EmailProvider) -> String {
    p.status
        .as_ref()
        .map(|s| reason_of(&s.conditions, "Ready"))
        .unwrap_or_default()
}

/// The Sent reason of a message.
pub fn sent_reason(m: &EmailMessage) -> String {
    m.status
        .as_ref()
        .map(|s| reason_of(&s.conditions, "Sent"))
        .unwrap_or_default()
}

/// The Events recorded for an object, as (type, reason, note).
pub async fn events_for(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .expect("listing events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// An extra mailpit with its own settings (e.g. no TLS), started into the
/// environment's directory so it stops with it. Returns (smtp host:port, API).
pub fn extra_mailpit(name: &str, flags: &[&str]) -> (String, String) {
    let dir: PathBuf = env().dir.clone();
    let out = Command::new(super::root().join("hack/mailpit-up.sh"))
        .arg(&dir)
        .arg(name)
        .args(flags)
        .output()
        .expect("running hack/mailpit-up.sh");
    assert!(
        out.status.success(),
        "mailpit-up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let value = |suffix: &str| {
        text.lines()
            .find_map(|l| {
                l.split_once('=')
                    .filter(|(k, _)| k.ends_with(suffix))
                    .map(|(_, v)| v.to_string())
            })
            .expect("mailpit-up output")
    };
    (value("_SMTP"), value("_API"))
}

/// The resource version of a message, to tell whether anything wrote to it.
pub fn version(m: &EmailMessage) -> String {
    m.resource_version().unwrap_or_default()
}

/// Stops an extra mailpit started by [`extra_mailpit`] and waits until its
/// process is gone (the server goes away).
pub fn stop_extra_mailpit(name: &str) {
    let pid_file = env().dir.join("pids").join(format!("{name}.pid"));
    let pid = std::fs::read_to_string(&pid_file).expect("the mailpit pid file");
    let pid = pid.trim();
    let status = Command::new("kill").arg(pid).status().expect("kill");
    assert!(status.success(), "stopping mailpit {name}");
    let alive = || {
        Command::new("kill")
            .args(["-0", pid])
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "mailpit {name} did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(pid_file).expect("removing the pid file");
}

/// A controller for `scene`'s namespace that serves ClusterEmailProviders
/// with Secrets in `secrets`.
pub fn serving_cluster_providers(scene: &Scene, secrets: &str) -> RunningController {
    let settings = Settings {
        cluster_provider_namespace: Some(secrets.to_string()),
        ..settings(&scene.ns)
    };
    RunningController::start_with_settings(scene.client.clone(), settings)
}

/// The namespace ClusterEmailProviders' Secrets live in, holding the
/// shared mailpit's credentials (`smtp-credentials`) and CA.
pub async fn cluster_home(test: &str) -> Scene {
    let home = Scene::new(test).await;
    smtp_secret(
        &home.client,
        &home.ns,
        "smtp-credentials",
        &super::env().smtp_password,
    )
    .await;
    ca_config_map(&home.client, &home.ns).await;
    home
}

/// One test's namespace and client, with the steps tests share.
pub struct Scene {
    /// An admin client.
    pub client: Client,
    /// The test's own namespace.
    pub ns: String,
}

impl Scene {
    /// A fresh namespace named after `test`.
    pub async fn new(test: &str) -> Self {
        let client = super::client().await;
        let ns = super::namespace(&client, test).await;
        Self { client, ns }
    }

    /// Starts a controller for this namespace.
    pub async fn controller(&self) -> RunningController {
        RunningController::start(&self.ns).await
    }

    /// The `mailpit` provider for the shared mailpit, with Secret and CA.
    pub async fn mailpit_provider(&self) -> EmailProvider {
        mailpit_provider(&self.client, &self.ns).await
    }

    /// Creates a message `name` with `spec`.
    pub async fn message(&self, name: &str, spec: Value) -> EmailMessage {
        message(&self.client, &self.ns, name, spec).await
    }

    /// Creates a short text message `name` through `provider`.
    pub async fn note(&self, name: &str, provider: &str, subject: &str) -> EmailMessage {
        let spec = json!({"providerRef": {"name": provider}, "to": ["x@example.org"], "subject": subject, "text": "hi"});
        self.message(name, spec).await
    }

    /// Waits until `check` holds for message `name`.
    pub async fn wait_message(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&EmailMessage) -> bool,
    ) -> EmailMessage {
        wait_message(&self.client, &self.ns, name, what, check).await
    }

    /// Waits until message `name` is in `phase`.
    pub async fn wait_phase(&self, name: &str, phase: mailroom::api::Phase) -> EmailMessage {
        let what = format!("{phase:?}");
        self.wait_message(name, &what, |m| {
            m.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// Waits until message `name` waits with `Sent` condition reason `reason`.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> EmailMessage {
        self.wait_message(name, reason, |m| sent_reason(m) == reason)
            .await
    }

    /// Waits until provider `name` has Ready reason `reason`.
    pub async fn wait_provider(&self, name: &str, reason: &str) -> EmailProvider {
        wait_provider(&self.client, &self.ns, name, reason, |p| {
            ready_reason(p) == reason
        })
        .await
    }
}

impl Scene {
    /// A provider `api` for one of the fake services at `url`, with the API
    /// key `key` in Secret `api-key`.
    pub async fn api_provider(
        &self,
        service: mailroom_fakes::Service,
        url: &str,
        key: &str,
    ) -> EmailProvider {
        create::<Secret>(
            &self.client,
            &self.ns,
            json!({"metadata": {"name": "api-key"}, "stringData": {"apiKey": key}}),
        )
        .await;
        self.api_provider_named(service, url, "api").await
    }

    /// Another provider `name` like [`Self::api_provider`]'s, using its Secret.
    pub async fn api_provider_named(
        &self,
        service: mailroom_fakes::Service,
        url: &str,
        name: &str,
    ) -> EmailProvider {
        let kind = format!("{service:?}");
        let mut api = json!({"provider": kind, "secretRef": {"name": "api-key"}, "endpoint": url, "timeoutSeconds": 5});
        if service == mailroom_fakes::Service::Mailgun {
            api["mailgun"] = json!({"domain": "mg.example.com"});
        }
        create(
            &self.client,
            &self.ns,
            json!({
                "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
                "metadata": {"name": name},
                "spec": {"defaultFrom": "mailroom tests <tests@mailroom.dev>", "api": api}
            }),
        )
        .await
    }
}

impl Scene {
    /// Creates `kind` `name` with `spec` as raw JSON (as kubectl sends it) and
    /// asserts the apiserver refuses it with 422 and a message containing
    /// `expected`, storing nothing.
    pub async fn assert_refused(&self, kind: &str, name: &str, spec: Value, expected: &str) {
        use kube::api::{ApiResource, DynamicObject};
        let resource = match kind {
            "EmailMessage" => ApiResource::erase::<EmailMessage>(&()),
            "EmailTemplate" => ApiResource::erase::<mailroom::api::EmailTemplate>(&()),
            "EmailRoute" => ApiResource::erase::<mailroom::api::EmailRoute>(&()),
            "EmailSuppression" => ApiResource::erase::<mailroom::api::EmailSuppression>(&()),
            _ => ApiResource::erase::<EmailProvider>(&()),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &resource);
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec
        }))
        .expect("object");
        let err = api
            .create(&PostParams::default(), &object)
            .await
            .expect_err(expected);
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(
            status.message.contains(expected),
            "{expected:?} in {:?}",
            status.message
        );
        assert!(
            api.get_opt(name).await.expect("get").is_none(),
            "{name} was stored"
        );
    }
}

/// The controller binary, running as its own process (for fault tests that
/// kill it). Its log goes to the environment's `logs/` directory.
pub struct ControllerProcess {
    child: std::process::Child,
    /// Its identity in the Lease, when leader election is on.
    pub identity: String,
}

impl ControllerProcess {
    /// Starts `mailroom run` for `namespace` with extra flags.
    pub fn spawn(namespace: &str, identity: &str, flags: &[&str]) -> Self {
        let log_path = env()
            .dir
            .join("logs")
            .join(format!("controller-{namespace}-{identity}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("controller log");
        let child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--identity",
                identity,
                "--lease-namespace",
                namespace,
                "--allowed-endpoint-hosts",
                FAKE_HOSTS,
            ])
            .args(if flags.contains(&"--admin-addr") {
                &[][..]
            } else {
                &["--admin-addr", "127.0.0.1:0"][..]
            })
            .args(if flags.contains(&"--webhook-addr") {
                &[][..]
            } else {
                &["--webhook-addr", "127.0.0.1:0"][..]
            })
            .args(flags)
            .env("KUBECONFIG", &env().kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting the controller");
        Self {
            child,
            identity: identity.to_string(),
        }
    }

    /// Kills it without warning (SIGKILL): no cleanup, no lease release.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("waiting for the controller")
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Restarts a component of the environment (`kube-apiserver`, or an extra
/// mailpit by name), keeping it down for `down` first.
pub fn restart(name: &str, down: Duration) {
    let out = Command::new(super::root().join("hack/restart.sh"))
        .arg(&env().dir)
        .arg(name)
        .args(["--down", &down.as_secs().to_string()])
        .output()
        .expect("running hack/restart.sh");
    assert!(
        out.status.success(),
        "restart {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The holder of the Lease `name` in `namespace`.
pub async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// All messages of `namespace`.
pub async fn all_messages(client: &Client, namespace: &str) -> Vec<EmailMessage> {
    Api::<EmailMessage>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("listing messages")
        .items
}

/// A namespace with a provider `api` for `service` on a fresh fake (valid
/// key `right-key`; the provider gets `key`), and a controller.
pub async fn api_scene(
    service: mailroom_fakes::Service,
    test: &str,
    key: &str,
) -> (Scene, mailroom_fakes::Fake, RunningController) {
    let config = mailroom_fakes::Config::with_key(VALID_API_KEY);
    let fake = mailroom_fakes::Fake::start(config)
        .await
        .expect("starting the fake");
    let scene = Scene::new(&format!("{}-{test}", format!("{service:?}").to_lowercase())).await;
    scene.api_provider(service, &fake.url, key).await;
    let controller = scene.controller().await;
    (scene, fake, controller)
}

/// The key the fakes of [`api_scene`] accept.
pub const VALID_API_KEY: &str = "right-key";
