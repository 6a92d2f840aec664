//! Reads the bounce mailboxes, on the leader: every few seconds it starts
//! a poll for each SMTP provider with `spec.smtp.bounces` whose
//! `pollSeconds` have passed (at most [`POLLS_AT_ONCE`] at once, one per
//! namespace, the namespace served longest ago first (`schedule`), each cut
//! off after [`POLL_DEADLINE`], so one tenant's slow mailboxes hold up no
//! other tenant's). A poll
//! logs in, reads at most [`MAX_PER_POLL`] messages it has not judged yet,
//! records each bounce or complaint it can tie to a message of its provider
//! (through the delivery writer, as the webhooks do, so both write alike),
//! deletes just those, and leaves the rest; then `BouncesReady` tells how it
//! went, with the counts so far.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::context::{Caches, Context, Settings};
use crate::api::bounces::{BounceMailbox, SoftBouncePolicy};
use crate::api::condition::{self, BOUNCES_READY, Reason};
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, ProviderId};
use crate::bounces::MailboxState;
use crate::bounces::locate::{self, Located};
use crate::bounces::pop3::{MailboxError, Session};
use crate::bounces::report::{self, Action, Report, Verdict};
use crate::bounces::route;
use crate::bounces::schedule::{Candidate, Schedule};
use crate::delivery::suppress;
use crate::delivery::token::{BounceAddress, TokenKey};
use crate::delivery::writer::{Applied, Queue, Routed, Target};

/// How often due polls are looked for.
const TICK: Duration = Duration::from_secs(2);
/// Mailboxes read at once.
pub const POLLS_AT_ONCE: usize = 4;
/// The longest one poll may take.
pub const POLL_DEADLINE: Duration = Duration::from_secs(90);
/// Messages judged in one poll.
pub const MAX_PER_POLL: usize = 200;
/// How long a poll waits for one report's status write.
const WRITE_WAIT: Duration = Duration::from_secs(30);
/// Polls a report whose message is not recorded yet is tried in, before it
/// is left as unmatched.
pub const MAX_TRIES: u32 = 10;

/// What a poll did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    HardBounce,
    SoftBounce,
    Delayed,
    Delivered,
    Complaint,
    /// A hosted unsubscribe mail (to the mailto address of the
    /// List-Unsubscribe header), recorded.
    Unsubscribe,
    AutoReply,
    Malformed,
    Foreign,
    Unmatched,
    Other,
    /// Left, and deleted once the keep time passed.
    Expired,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::HardBounce => "hard_bounce",
            Kind::SoftBounce => "soft_bounce",
            Kind::Delayed => "delayed",
            Kind::Delivered => "delivered",
            Kind::Complaint => "complaint",
            Kind::Unsubscribe => "unsubscribe",
            Kind::AutoReply => "auto_reply",
            Kind::Malformed => "malformed",
            Kind::Foreign => "foreign",
            Kind::Unmatched => "unmatched",
            Kind::Other => "other",
            Kind::Expired => "expired",
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            Kind::HardBounce => "hard bounces recorded",
            Kind::SoftBounce => "soft bounces recorded",
            Kind::Delayed => "delays recorded",
            Kind::Delivered => "deliveries recorded",
            Kind::Complaint => "complaints recorded",
            Kind::Unsubscribe => "unsubscribes recorded",
            Kind::AutoReply => "auto-replies left",
            Kind::Malformed => "malformed reports left",
            Kind::Foreign => "reports for another provider left",
            Kind::Unmatched => "reports for no known message left",
            Kind::Other => "other messages left",
            Kind::Expired => "left messages deleted after the keep time",
        }
    }
}

/// One provider's memory between polls: the messages judged and left (by
/// UIDL, only those still in the mailbox, with when they were first left),
/// and the counts so far.
#[derive(Default)]
struct Memory {
    judged: HashMap<String, Instant>,
    tries: HashMap<String, u32>,
    counts: BTreeMap<Kind, u64>,
}

/// A provider with a mailbox, as a poll needs it.
struct Mailbox {
    id: ProviderId,
    provider: EmailProvider,
    mailbox: BounceMailbox,
    /// Where its Secrets (and a ClusterEmailProvider's suppressions) are.
    namespace: String,
}

impl Mailbox {
    /// The provider's soft bounce policy.
    fn soft_bounces(&self) -> SoftBouncePolicy {
        self.provider.spec.soft_bounces.clone().unwrap_or_default()
    }
}

/// What the reader uses of the controller: its client, the provider
/// caches, the ledger, the mailboxes' shared state, telemetry and settings.
pub(super) struct Handles {
    client: Client,
    caches: Caches,
    ledger: Arc<crate::ledger::Ledger>,
    bounces: Arc<crate::bounces::Bounces>,
    telemetry: Arc<crate::admin::Telemetry>,
    settings: Settings,
    unsubscribe_keys: Arc<crate::delivery::unsubscribe::keys::Keys>,
}

impl Handles {
    /// The handles, taken from the controller's context.
    pub(super) fn of(ctx: &Context) -> Self {
        Self {
            client: ctx.client.clone(),
            caches: ctx.caches.clone(),
            ledger: ctx.ledger.clone(),
            bounces: ctx.bounces.clone(),
            telemetry: ctx.telemetry.clone(),
            settings: ctx.settings.clone(),
            unsubscribe_keys: ctx.unsubscribe_keys.clone(),
        }
    }
}

/// Runs until dropped (its polls stop with it).
pub(super) async fn run(handles: Arc<Handles>) {
    if !(handles.caches.listed().await && handles.ledger.loaded().await) {
        return;
    }
    let home = handles.settings.cluster_provider_namespace.clone();
    let queue = Arc::new(Queue::start(
        handles.client.clone(),
        2,
        256,
        home,
        handles.bounces.soft.clone(),
        handles.telemetry.clone(),
    ));
    let memory: Arc<Mutex<HashMap<ProviderId, Memory>>> = Arc::default();
    let mut schedule = Schedule::default();
    let mut polls: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<ProviderId, tokio::task::AbortHandle> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        while polls.try_join_next().is_some() {}
        running.retain(|_, handle| !handle.is_finished());
        let mailboxes = mailboxes(&handles);
        let present: HashSet<ProviderId> = mailboxes.iter().map(|m| m.id.clone()).collect();
        schedule.retain(&present);
        handles.bounces.retain(|id| present.contains(id));
        if let Ok(mut memory) = memory.lock() {
            memory.retain(|id, _| present.contains(id));
        }
        let candidates: Vec<Candidate> = mailboxes
            .iter()
            .map(|m| Candidate {
                id: m.id.clone(),
                every: Duration::from_secs(u64::from(m.mailbox.poll_seconds)),
            })
            .collect();
        let busy: HashSet<ProviderId> = running.keys().cloned().collect();
        let free = POLLS_AT_ONCE.saturating_sub(running.len());
        let picked = schedule.pick(&candidates, &busy, free, Instant::now());
        for mailbox in mailboxes.into_iter().filter(|m| picked.contains(&m.id)) {
            let id = mailbox.id.clone();
            let (handles, queue, memory) = (handles.clone(), queue.clone(), memory.clone());
            let handle = polls.spawn(async move {
                poll(&handles, &queue, &memory, mailbox).await;
            });
            running.insert(id, handle);
        }
    }
}

/// Every provider the controller serves that names a bounce mailbox.
fn mailboxes(handles: &Handles) -> Vec<Mailbox> {
    let mut found = Vec::new();
    for provider in handles.caches.providers.state() {
        if let Some(mailbox) = provider.spec.smtp.as_ref().and_then(|s| s.bounces.clone()) {
            found.push(Mailbox {
                id: ProviderId::from_provider(&provider),
                namespace: provider.namespace().unwrap_or_default(),
                provider: (*provider).clone(),
                mailbox,
            });
        }
    }
    if let Some(home) = &handles.settings.cluster_provider_namespace {
        for cluster in handles.caches.cluster_providers.state() {
            let provider = ClusterEmailProvider::as_provider(&cluster);
            if let Some(mailbox) = provider.spec.smtp.as_ref().and_then(|s| s.bounces.clone()) {
                found.push(Mailbox {
                    id: ProviderId::from_provider(&provider),
                    namespace: home.clone(),
                    provider,
                    mailbox,
                });
            }
        }
    }
    found
}

/// One poll of one mailbox, bounded in time; then `BouncesReady`.
async fn poll(
    handles: &Handles,
    queue: &Queue,
    memory: &Mutex<HashMap<ProviderId, Memory>>,
    mailbox: Mailbox,
) {
    let read = tokio::time::timeout(POLL_DEADLINE, read(handles, queue, memory, &mailbox)).await;
    let state = match read {
        Ok(Ok(())) => {
            let counts = memory
                .lock()
                .ok()
                .and_then(|m| m.get(&mailbox.id).map(|m| m.counts.clone()))
                .unwrap_or_default();
            MailboxState {
                ready: true,
                reason: Reason::MailboxRead,
                message: summary(&mailbox, &counts),
            }
        }
        Ok(Err((reason, message))) => MailboxState {
            ready: false,
            reason,
            message,
        },
        Err(_) => MailboxState {
            ready: false,
            reason: Reason::Unreachable,
            message: format!(
                "reading {}:{} took longer than {} s; it is tried again in {} s",
                mailbox.mailbox.pop3.host,
                mailbox.mailbox.pop3.port,
                POLL_DEADLINE.as_secs(),
                mailbox.mailbox.poll_seconds
            ),
        },
    };
    if !state.ready {
        warn!(provider = %mailbox.id, reason = state.reason.as_str(), message = %state.message, "the bounce mailbox could not be read");
    }
    // Remembered once written, so a write that failed is made again after
    // the next poll.
    if handles.bounces.state(&mailbox.id).as_ref() != Some(&state)
        && write_condition(&handles.client, &mailbox.provider, &state).await
    {
        handles.bounces.set_state(&mailbox.id, state);
    }
}

fn summary(mailbox: &Mailbox, counts: &BTreeMap<Kind, u64>) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.phrase()))
        .collect();
    let so_far = if parts.is_empty() {
        "nothing found yet".to_string()
    } else {
        parts.join(", ")
    };
    format!(
        "{} read every {} s; since the controller started: {so_far}",
        mailbox.mailbox.address, mailbox.mailbox.poll_seconds
    )
}

type Failure = (Reason, String);

fn failure(e: MailboxError) -> Failure {
    let reason = match &e {
        MailboxError::Connect { .. } | MailboxError::Protocol { .. } => Reason::Unreachable,
        MailboxError::Tls { .. } => Reason::TlsFailed,
        MailboxError::Auth(_) => Reason::AuthFailed,
    };
    (reason, format!("spec.smtp.bounces.pop3: {e}"))
}

/// What one poll needs: the logged-in session, the bounce address and the
/// provider's token key.
struct Opened {
    session: Session,
    address: BounceAddress,
    key: TokenKey,
}

/// Reads the mailbox Secret (and CA bundle) and logs in.
async fn open(handles: &Handles, mailbox: &Mailbox) -> Result<Opened, Failure> {
    let spec = &mailbox.mailbox;
    let credentials = &super::credentials::mailbox_secret;
    let secret = credentials(&handles.client, &mailbox.namespace, spec)
        .await
        .map_err(|e| (e.reason, e.message))?;
    let ca = match &spec.pop3.ca_bundle {
        None => None,
        Some(source) => Some(
            super::credentials::ca_bundle(
                &handles.client,
                &mailbox.namespace,
                source,
                "spec.smtp.bounces.pop3.caBundle",
                &mut String::new(),
            )
            .await
            .map_err(|e| (e.reason, e.message))?,
        ),
    };
    let address = BounceAddress::parse(&spec.address).ok_or((
        Reason::InvalidSpec,
        "spec.smtp.bounces.address: not local@domain".to_string(),
    ))?;
    let key = TokenKey::derive(
        secret.token_key.as_deref(),
        secret.password.as_bytes(),
        &mailbox.id,
    );
    let session = Session::open(
        &spec.pop3,
        ca.as_deref(),
        &secret.username,
        &secret.password,
    )
    .await
    .map_err(failure)?;
    Ok(Opened {
        session,
        address,
        key,
    })
}

/// What became of one message of the mailbox in this poll.
enum Judged {
    /// Recorded: delete it.
    Recorded(Kind),
    /// Left in the mailbox, not judged again while it stays.
    Left(Kind),
    /// Its message is not recorded yet, or the write failed: judged again.
    Again,
}

/// Logs in, judges new messages, deletes those recorded, logs out.
async fn read(
    handles: &Handles,
    queue: &Queue,
    memory: &Mutex<HashMap<ProviderId, Memory>>,
    mailbox: &Mailbox,
) -> Result<(), Failure> {
    let mut opened = open(handles, mailbox).await?;
    let listed = opened.session.list().await.map_err(failure)?;
    let (judged, tries) = memory
        .lock()
        .ok()
        .and_then(|m| {
            m.get(&mailbox.id)
                .map(|m| (m.judged.clone(), m.tries.clone()))
        })
        .unwrap_or_default();
    let mut poll = Poll::default();
    for item in listed
        .iter()
        .filter(|i| !judged.contains_key(&i.uid))
        .take(MAX_PER_POLL)
    {
        match judge(handles, queue, mailbox, &mut opened, item).await? {
            Judged::Recorded(kind) => {
                opened.session.delete(item.number).await.map_err(failure)?;
                poll.tally.push(kind);
            }
            Judged::Left(kind) => {
                poll.tally.push(kind);
                poll.left.push(item.uid.clone());
            }
            // Judged again on the next polls, a few times.
            Judged::Again if tries.get(&item.uid).copied().unwrap_or(0) + 1 < MAX_TRIES => {
                poll.tried.push(item.uid.clone());
            }
            Judged::Again => {
                poll.tally.push(Kind::Unmatched);
                poll.left.push(item.uid.clone());
            }
        }
    }
    // What was left long enough ago goes, so the mailbox stays bounded.
    let keep = Duration::from_secs(u64::from(handles.settings.bounce_mailbox_keep_hours) * 3600);
    for item in listed
        .iter()
        .filter(|i| {
            judged
                .get(&i.uid)
                .is_some_and(|left| left.elapsed() >= keep)
        })
        .take(MAX_PER_POLL)
    {
        opened.session.delete(item.number).await.map_err(failure)?;
        poll.tally.push(Kind::Expired);
    }
    tracing::debug!(provider = %mailbox.id, listed = listed.len(), judged = poll.tally.len(), "bounce mailbox read");
    // The reports are recorded whatever QUIT says; one not deleted is read
    // again and found recorded.
    if let Err(e) = opened.session.close().await {
        warn!(provider = %mailbox.id, error = %e, "the bounce mailbox session did not end cleanly");
    }
    let present: HashSet<&str> = listed.iter().map(|i| i.uid.as_str()).collect();
    if let Ok(mut memory) = memory.lock() {
        let mine = memory.entry(mailbox.id.clone()).or_default();
        mine.remember(poll, &present, &handles.telemetry.metrics);
    }
    Ok(())
}

/// What one poll found, for the provider's memory.
#[derive(Default)]
struct Poll {
    /// The kind of every message judged.
    tally: Vec<Kind>,
    /// Messages left in the mailbox.
    left: Vec<String>,
    /// Messages to judge again.
    tried: Vec<String>,
}

impl Memory {
    /// Keeps what `poll` found; forgets messages no longer `present`.
    fn remember(&mut self, poll: Poll, present: &HashSet<&str>, metrics: &crate::metrics::Metrics) {
        self.judged.retain(|uid, _| present.contains(uid.as_str()));
        self.tries.retain(|uid, _| present.contains(uid.as_str()));
        let now = Instant::now();
        for uid in poll.left {
            self.tries.remove(&uid);
            self.judged.entry(uid).or_insert(now);
        }
        for uid in poll.tried {
            *self.tries.entry(uid).or_default() += 1;
        }
        for kind in poll.tally {
            *self.counts.entry(kind).or_default() += 1;
            metrics.count_mailbox_message(kind.label());
        }
    }
}

/// Reads one message and records it if it is a report of this provider.
async fn judge(
    handles: &Handles,
    queue: &Queue,
    mailbox: &Mailbox,
    opened: &mut Opened,
    item: &crate::bounces::pop3::Listed,
) -> Result<Judged, Failure> {
    let verdict = if item.size > report::MAX_BYTES {
        let why = format!("{} bytes, more than {}", item.size, report::MAX_BYTES);
        Verdict::Malformed(why)
    } else {
        let raw = opened
            .session
            .retrieve(item.number, item.size)
            .await
            .map_err(failure)?;
        if let Some(judged) = unsubscribe_mail(handles, mailbox, &raw).await {
            return Ok(judged);
        }
        match report::read(&raw) {
            Verdict::Report(r) => {
                let text = String::from_utf8_lossy(&raw);
                let (key, address) = (&opened.key, &opened.address);
                return Ok(
                    match record(handles, queue, mailbox, key, address, &text, &r).await {
                        Some(kind) if is_recorded(kind) => Judged::Recorded(kind),
                        Some(kind) => Judged::Left(kind),
                        None => Judged::Again,
                    },
                );
            }
            other => other,
        }
    };
    let kind = match verdict {
        Verdict::AutoReply => Kind::AutoReply,
        Verdict::Malformed(why) => {
            warn!(provider = %mailbox.id, uidl = %item.uid, %why, "a malformed report in the bounce mailbox was left");
            Kind::Malformed
        }
        Verdict::NotABounce | Verdict::Report(_) => Kind::Other,
    };
    Ok(Judged::Left(kind))
}

/// Records `raw` if it is a hosted unsubscribe mail: its subject names a
/// namespace, a list and a token that opens (for a namespaced provider, in
/// the provider's own namespace). `None` when it is not one; left as
/// `Other` when its token does not open; judged again when the record
/// cannot be written now.
async fn unsubscribe_mail(handles: &Handles, mailbox: &Mailbox, raw: &[u8]) -> Option<Judged> {
    use mailparse::MailHeaderMap;
    let (headers, _) = mailparse::parse_headers(raw).ok()?;
    let subject = headers.get_first_value("Subject")?;
    let (namespace, list, token) = crate::delivery::unsubscribe::parse_subject(&subject)?;
    let metrics = &handles.telemetry.metrics;
    let own = match &mailbox.id {
        ProviderId::Namespaced { namespace: own, .. } => own == namespace,
        ProviderId::Cluster { .. } => true,
    };
    let keys = handles.unsubscribe_keys.for_opening().await.ok();
    let address = keys.and_then(|k| k.open(namespace, list, token).ok());
    let Some(address) = address.filter(|_| own) else {
        metrics.count_unsubscribe("mail", "invalid");
        return Some(Judged::Left(Kind::Other));
    };
    let how = "an unsubscribe mail";
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    match suppress::unsubscribe(&handles.client, namespace, list, &address, how, now).await {
        Ok(done) => {
            let outcome = match done {
                suppress::Unsubscribed::Recorded => "recorded",
                suppress::Unsubscribed::Already => "already",
                suppress::Unsubscribed::Refused => "refused",
            };
            metrics.count_unsubscribe("mail", outcome);
            Some(Judged::Recorded(Kind::Unsubscribe))
        }
        Err(e) => {
            metrics.count_unsubscribe("mail", "failed");
            warn!(provider = %mailbox.id, error = %e, "recording an unsubscribe mail failed; read again later");
            Some(Judged::Again)
        }
    }
}

fn is_recorded(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HardBounce | Kind::SoftBounce | Kind::Delayed | Kind::Delivered | Kind::Complaint
    )
}

/// Ties `report` to its message and records it; the kind, or `None` when
/// it should be judged again later (not written yet, or a write failed).
async fn record(
    handles: &Handles,
    queue: &Queue,
    mailbox: &Mailbox,
    key: &TokenKey,
    address: &BounceAddress,
    text: &str,
    report: &Report,
) -> Option<Kind> {
    let located = locate::locate(
        &handles.client,
        &handles.ledger,
        &mailbox.id,
        key,
        address,
        text,
        report,
    )
    .await;
    let (message, recipient, evidence) = match located {
        Ok(Located::Found {
            message,
            recipient,
            evidence,
        }) => (message, recipient, evidence),
        Ok(Located::Gone) => {
            suppress_for_gone_message(handles, mailbox, report).await;
            return Some(kind_of(report));
        }
        Ok(Located::Foreign) => return Some(Kind::Foreign),
        Ok(Located::NotRecorded) => return None,
        Ok(Located::Unmatched) => return Some(Kind::Unmatched),
        Err(e) => {
            warn!(provider = %mailbox.id, error = %e, "a bounce is tried again later");
            return None;
        }
    };
    let events = route::routed(report, &message, recipient, evidence);
    if events.is_empty() {
        return Some(Kind::Unmatched);
    }
    write(queue, mailbox, &message, report, events).await
}

/// A report whose message is gone cannot be written to it, but its
/// addresses are suppressed (and soft bounces counted) all the same.
async fn suppress_for_gone_message(handles: &Handles, mailbox: &Mailbox, report: &Report) {
    let home = handles.settings.cluster_provider_namespace.as_deref();
    let policy = mailbox.soft_bounces();
    for (i, outcome) in report.recipients.iter().enumerate() {
        let event = route::event_of(report, outcome, outcome.address.clone(), i);
        suppress::suppress(&handles.client, &mailbox.id, home, &event).await;
        let soft = &handles.bounces.soft;
        suppress::count_soft(&handles.client, soft, &mailbox.id, home, &policy, &event).await;
    }
}

/// Writes `events` to `message` through the delivery writer and
/// waits (bounded) for the result.
async fn write(
    queue: &Queue,
    mailbox: &Mailbox,
    message: &EmailMessage,
    report: &Report,
    events: Vec<Routed>,
) -> Option<Kind> {
    let target = Target {
        message: ObjectRef::from_obj(message),
        uid: message.uid().unwrap_or_default(),
        provider: mailbox.id.clone(),
        soft_bounces: mailbox.soft_bounces(),
        // Bounces and complaints carry no unsubscribe.
        unsubscribe: None,
    };
    let Ok(done) = queue.submit(target, events) else {
        return None;
    };
    let applied = match tokio::time::timeout(WRITE_WAIT, done).await {
        Ok(Ok(Ok(applied))) => applied,
        Ok(Ok(Err(e))) => {
            warn!(provider = %mailbox.id, error = %e, "recording a bounce failed; tried again later");
            return None;
        }
        _ => return None,
    };
    match applied {
        Applied::Recorded | Applied::Unchanged => {
            info!(provider = %mailbox.id, namespace = message.namespace().unwrap_or_default(), name = message.name_any(), kind = kind_of(report).label(), "bounce recorded");
            Some(kind_of(report))
        }
        Applied::Gone => Some(kind_of(report)),
        Applied::Foreign => Some(Kind::Foreign),
        Applied::NotYet => None,
    }
}

/// The kind a report counts as: its gravest outcome.
fn kind_of(report: &Report) -> Kind {
    let kinds = report.recipients.iter().map(|o| match o.action {
        Action::Failed if o.is_hard() => Kind::HardBounce,
        Action::Failed => Kind::SoftBounce,
        Action::Delayed => Kind::Delayed,
        Action::Delivered => Kind::Delivered,
        Action::Complained => Kind::Complaint,
    });
    kinds.min().unwrap_or(Kind::Other)
}

/// Writes `BouncesReady` on the provider, guarded by its resourceVersion;
/// `false` when it could not.
async fn write_condition(client: &Client, provider: &EmailProvider, state: &MailboxState) -> bool {
    let edit = |conditions: &mut Vec<_>, generation| {
        condition::set(
            conditions,
            BOUNCES_READY,
            state.ready,
            state.reason,
            &state.message,
            generation,
        );
    };
    match super::provider_status::edit_conditions(client, provider, edit).await {
        Ok(()) => true,
        Err(e) => {
            warn!(provider = provider.name_any(), error = %e, "writing BouncesReady failed; written after the next poll");
            false
        }
    }
}
