//! The messages waiting for a send slot of their provider, first come first
//! served. A slot given back wakes the next waiter at once, instead of every
//! waiting message looking again on a timer: a provider whose share is full
//! keeps it full, and a backlog costs no reconcile until its turn. Bounded:
//! past the cap a message falls back to looking again on a timer.

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
    turns: mpsc::UnboundedSender<ObjectRef<EmailMessage>>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<EmailMessage>>>>,
}

/// Each provider's line, and who is in one.
#[derive(Default)]
struct Lines {
    by_provider: HashMap<ProviderId, VecDeque<ObjectRef<EmailMessage>>>,
    queued: HashSet<ObjectRef<EmailMessage>>,
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
            .push_back(message);
        true
    }

    /// Gives the next message in `provider`'s line its turn. Returns whether
    /// one was waiting.
    pub fn wake_next(&self, provider: &ProviderId) -> bool {
        let next = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            let Some(line) = lines.by_provider.get_mut(provider) else {
                return false;
            };
            let next = line.pop_front();
            if line.is_empty() {
                lines.by_provider.remove(provider);
            }
            if let Some(next) = &next {
                lines.queued.remove(next);
            }
            next
        };
        match next {
            // The receiver lives as long as the message controller; once it
            // is gone nobody needs the turn.
            Some(next) => self.turns.send(next).is_ok(),
            None => false,
        }
    }

    /// How many messages wait in `provider`'s line.
    pub fn waiting(&self, provider: &ProviderId) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.by_provider.get(provider).map_or(0, VecDeque::len)
    }

    /// The turns, as a stream of messages to reconcile. The first call takes
    /// it; later calls get an empty stream.
    pub fn turns(&self) -> impl Stream<Item = ObjectRef<EmailMessage>> + Send + 'static {
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
        assert_eq!(turns.next().await, Some(message("m1")));
        assert_eq!(turns.next().await, Some(message("m2")));
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
