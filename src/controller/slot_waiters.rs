//! The messages waiting for a send slot of their provider. A slot given back
//! wakes the next waiter at once, instead of every waiting message looking
//! again on a timer: a provider whose share is full keeps it full, and a
//! backlog costs no reconcile until its turn. Turns go round the namespaces
//! waiting on a provider (first come first served within each), so one
//! tenant's backlog on a shared provider does not put another's messages
//! behind all of it. Bounded: past the cap a message falls back to looking
//! again on a timer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::api::{EmailMessage, ProviderId};

/// The most messages waiting in line over all providers.
pub const MAX_WAITERS: usize = 32_768;

/// The lines of waiting messages, and the stream their turns go out on.
pub struct SlotWaiters {
    lines: Mutex<Lines>,
    turns: mpsc::UnboundedSender<Turn>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Turn>>>,
}

/// A turn given: `message` may take a slot of `provider`, which just
/// came free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Whose slot came free.
    pub provider: ProviderId,
    /// The message whose turn it is.
    pub message: ObjectRef<EmailMessage>,
}

/// Each provider's line, who is in one, and the turns given and not yet
/// used or handed on (whose provider's slot came free for the message).
#[derive(Default)]
struct Lines {
    by_provider: HashMap<ProviderId, Line>,
    queued: HashSet<ObjectRef<EmailMessage>>,
    given: HashMap<ObjectRef<EmailMessage>, ProviderId>,
}

impl Lines {
    /// Forgets the turn `provider` gave `message`, if it gave one.
    fn settle(&mut self, provider: &ProviderId, message: &ObjectRef<EmailMessage>) {
        if self.given.get(message) == Some(provider) {
            self.given.remove(message);
        }
    }
}

/// One provider's waiting messages: a queue per namespace, and the order in
/// which the namespaces get their turns.
#[derive(Default)]
struct Line {
    by_namespace: HashMap<String, VecDeque<ObjectRef<EmailMessage>>>,
    turns: VecDeque<String>,
}

impl Line {
    fn push(&mut self, message: ObjectRef<EmailMessage>) {
        let namespace = message.namespace.clone().unwrap_or_default();
        let queue = self.by_namespace.entry(namespace.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(namespace);
        }
        queue.push_back(message);
    }

    /// The first message of the namespace whose turn it is; that namespace
    /// goes to the back of the turns if it has more waiting.
    fn pop(&mut self) -> Option<ObjectRef<EmailMessage>> {
        let namespace = self.turns.pop_front()?;
        let queue = self.by_namespace.get_mut(&namespace)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.by_namespace.remove(&namespace);
        } else {
            self.turns.push_back(namespace);
        }
        next
    }

    /// Takes `message` out of the line, wherever it stands. Returns
    /// whether it was there.
    fn remove(&mut self, message: &ObjectRef<EmailMessage>) -> bool {
        let namespace = message.namespace.clone().unwrap_or_default();
        let Some(queue) = self.by_namespace.get_mut(&namespace) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|waiting| waiting != message);
        let removed = queue.len() < before;
        if queue.is_empty() {
            self.by_namespace.remove(&namespace);
            self.turns.retain(|turn| turn != &namespace);
        }
        removed
    }

    fn len(&self) -> usize {
        self.by_namespace.values().map(VecDeque::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

impl Default for SlotWaiters {
    fn default() -> Self {
        let (turns, receiver) = mpsc::unbounded_channel();
        Self {
            lines: Mutex::default(),
            turns,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl SlotWaiters {
    /// Puts `message` at the end of `provider`'s line. False when the lines
    /// are full (the message should look again on a timer); true when it is
    /// in a line, now or already.
    pub fn wait(&self, provider: &ProviderId, message: ObjectRef<EmailMessage>) -> bool {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        // Back in line: the slot its turn offered was taken first.
        lines.settle(provider, &message);
        if lines.queued.contains(&message) {
            return true;
        }
        if lines.queued.len() >= MAX_WAITERS {
            return false;
        }
        lines.queued.insert(message.clone());
        lines
            .by_provider
            .entry(provider.clone())
            .or_default()
            .push(message);
        true
    }

    /// Takes `message` out of `provider`'s line: it got a slot without
    /// its turn (another reconcile of it came first), so a turn given to
    /// it later would be spent on a message that no longer waits while
    /// the others go on waiting.
    pub fn leave(&self, provider: &ProviderId, message: &ObjectRef<EmailMessage>) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.settle(provider, message);
        if !lines.queued.contains(message) {
            return;
        }
        // Only out of this provider's line: a routed message that waited
        // on another provider stays in that line, and in the set, so the
        // two never disagree.
        let Some(line) = lines.by_provider.get_mut(provider) else {
            return;
        };
        if !line.remove(message) {
            return;
        }
        if line.is_empty() {
            lines.by_provider.remove(provider);
        }
        lines.queued.remove(message);
    }

    /// Gives the next message in `provider`'s line its turn. Returns whether
    /// one was waiting.
    pub fn wake_next(&self, provider: &ProviderId) -> bool {
        let message = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            let Some(line) = lines.by_provider.get_mut(provider) else {
                return false;
            };
            let next = line.pop();
            if line.is_empty() {
                lines.by_provider.remove(provider);
            }
            if let Some(next) = &next {
                lines.queued.remove(next);
                // Bounded as the lines are; past the bound a turn not used
                // waits for the timers, as before.
                if lines.given.len() < MAX_WAITERS {
                    lines.given.insert(next.clone(), provider.clone());
                }
            }
            next
        };
        match message {
            // The receiver lives as long as the message controller; once it
            // is gone nobody needs the turn.
            Some(message) => self
                .turns
                .send(Turn {
                    provider: provider.clone(),
                    message,
                })
                .is_ok(),
            None => false,
        }
    }

    /// Called when a reconcile of `message` ends, or when its turn finds it
    /// gone (deleted, or finished by another writer): a turn it was given
    /// and did not use (it took no slot of that provider: it now waits for
    /// something else, went through another provider, or is gone) goes to
    /// the next in that provider's line. Returns whether a turn was handed
    /// on.
    pub fn done(&self, message: &ObjectRef<EmailMessage>) -> bool {
        let unused = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            lines.given.remove(message)
        };
        unused.is_some_and(|provider| self.wake_next(&provider))
    }

    /// How many messages wait in `provider`'s line.
    pub fn waiting(&self, provider: &ProviderId) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.by_provider.get(provider).map_or(0, Line::len)
    }

    /// The turns, as a stream. The first call takes it; later calls get an
    /// empty stream.
    pub fn turns(&self) -> impl Stream<Item = Turn> + Send + use<> {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        futures::stream::unfold(receiver, |receiver| async move {
            let mut receiver = receiver?;
            let next = receiver.recv().await?;
            Some((next, Some(receiver)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn provider(name: &str) -> ProviderId {
        ProviderId::Namespaced {
            namespace: "team-a".into(),
            name: name.into(),
        }
    }

    fn message(name: &str) -> ObjectRef<EmailMessage> {
        ObjectRef::new(name).within("team-a")
    }

    #[tokio::test]
    async fn turns_go_round_the_namespaces_waiting_on_a_provider() {
        let waiters = SlotWaiters::default();
        let mut turns = Box::pin(waiters.turns());
        let shared = provider("shared");
        for i in 0..3 {
            assert!(waiters.wait(&shared, message(&format!("flood-{i}"))));
        }
        let steady = |name: &str| ObjectRef::new(name).within("team-b");
        assert!(waiters.wait(&shared, steady("steady-0")));
        assert!(waiters.wait(&shared, steady("steady-1")));
        let mut order = Vec::new();
        while waiters.wake_next(&shared) {
            order.push(turns.next().await.expect("a turn").message.name);
        }
        assert_eq!(
            order,
            ["flood-0", "steady-0", "flood-1", "steady-1", "flood-2"],
            "a backlog of one namespace does not put another's behind all of it"
        );
    }

    #[tokio::test]
    async fn turns_go_in_order_of_arrival_per_provider() {
        let waiters = SlotWaiters::default();
        let mut turns = Box::pin(waiters.turns());
        let (smtp, api) = (provider("smtp"), provider("api"));
        assert!(waiters.wait(&smtp, message("m1")));
        assert!(waiters.wait(&api, message("a1")));
        assert!(waiters.wait(&smtp, message("m2")));
        assert!(waiters.wait(&smtp, message("m1")), "already in line");
        assert_eq!(waiters.waiting(&smtp), 2, "no message twice in a line");

        assert!(waiters.wake_next(&smtp));
        assert!(waiters.wake_next(&smtp));
        assert!(!waiters.wake_next(&smtp), "the line is empty");
        assert_eq!(next(&mut turns).await, Some(message("m1")));
        assert_eq!(next(&mut turns).await, Some(message("m2")));
        assert_eq!(
            waiters.waiting(&api),
            1,
            "another provider's line is its own"
        );
        assert!(
            waiters.wait(&smtp, message("m1")),
            "a woken message may wait again"
        );
        assert_eq!(waiters.waiting(&smtp), 1);
    }

    #[tokio::test]
    async fn a_message_that_got_a_slot_out_of_turn_leaves_the_line() {
        let waiters = SlotWaiters::default();
        let mut turns = Box::pin(waiters.turns());
        let smtp = provider("smtp");
        assert!(waiters.wait(&smtp, message("m1")));
        assert!(waiters.wait(&smtp, message("m2")));
        // m1 took a slot that came back before its turn did.
        waiters.leave(&smtp, &message("m1"));
        assert_eq!(waiters.waiting(&smtp), 1);
        assert!(waiters.wake_next(&smtp));
        assert_eq!(
            next(&mut turns).await,
            Some(message("m2")),
            "the next turn goes to a message still waiting"
        );
        assert!(!waiters.wake_next(&smtp), "the line is empty");
        waiters.leave(&smtp, &message("m3"));
        assert!(waiters.wait(&smtp, message("m1")), "it may wait again");
        // Waiting on another provider's line: leaving this one keeps it
        // there, counted once.
        let api = provider("api");
        assert!(waiters.wait(&api, message("r1")));
        waiters.leave(&smtp, &message("r1"));
        assert!(waiters.wait(&api, message("r1")), "already in line");
        assert_eq!(waiters.waiting(&api), 1);
    }

    #[tokio::test]
    async fn the_turn_of_a_message_gone_goes_to_the_next_in_its_line() {
        let waiters = SlotWaiters::default();
        let mut turns = Box::pin(waiters.turns());
        let (smtp, api) = (provider("smtp"), provider("api"));
        for (line, name) in [(&smtp, "deleted"), (&api, "a1"), (&smtp, "m2")] {
            assert!(waiters.wait(line, message(name)));
        }
        assert!(waiters.wake_next(&smtp));
        let turn = turns.next().await.expect("a turn");
        assert_eq!(turn.provider, smtp, "the turn names whose slot came free");
        assert_eq!(turn.message, message("deleted"));
        // The message was deleted while it waited: its turn is handed on.
        assert!(waiters.done(&turn.message));
        assert_eq!(next(&mut turns).await, Some(message("m2")));
        assert!(!waiters.done(&message("m2")), "nobody else waits on smtp");
        assert_eq!(waiters.waiting(&api), 1, "not another provider's line");
    }

    #[tokio::test]
    async fn a_turn_not_used_goes_on_when_the_reconcile_ends() {
        let waiters = SlotWaiters::default();
        let mut turns = Box::pin(waiters.turns());
        let (smtp, api) = (provider("smtp"), provider("api"));
        for name in ["rate-limited", "m2", "m3", "m4"] {
            assert!(waiters.wait(&smtp, message(name)));
        }
        assert!(waiters.wake_next(&smtp));
        assert_eq!(next(&mut turns).await, Some(message("rate-limited")));
        // Its reconcile ends waiting for something else, with no slot.
        assert!(waiters.done(&message("rate-limited")), "handed on");
        assert_eq!(next(&mut turns).await, Some(message("m2")));
        assert!(!waiters.done(&message("rate-limited")), "only once");
        // A message that takes the slot it was given uses its turn.
        waiters.leave(&smtp, &message("m2"));
        assert!(!waiters.done(&message("m2")));
        // One that found the slot taken and waits again passes nothing on.
        assert!(waiters.wake_next(&smtp));
        assert_eq!(next(&mut turns).await, Some(message("m3")));
        assert!(waiters.wait(&smtp, message("m3")));
        assert!(!waiters.done(&message("m3")));
        // A slot of another provider does not use a turn of this one.
        assert!(waiters.wake_next(&smtp));
        assert_eq!(next(&mut turns).await, Some(message("m4")));
        waiters.leave(&api, &message("m4"));
        assert!(waiters.done(&message("m4")), "smtp's turn goes on");
        assert_eq!(next(&mut turns).await, Some(message("m3")));
    }

    async fn next(
        turns: &mut (impl Stream<Item = Turn> + Unpin),
    ) -> Option<ObjectRef<EmailMessage>> {
        turns.next().await.map(|turn| turn.message)
    }

    #[test]
    fn the_lines_are_bounded() {
        let waiters = SlotWaiters::default();
        let smtp = provider("smtp");
        for i in 0..MAX_WAITERS {
            assert!(waiters.wait(&smtp, message(&format!("m{i}"))));
        }
        assert!(
            !waiters.wait(&smtp, message("one-too-many")),
            "past the cap a message looks again on a timer"
        );
        assert!(waiters.wake_next(&smtp));
        assert!(waiters.wait(&smtp, message("one-too-many")), "room again");
    }
}
