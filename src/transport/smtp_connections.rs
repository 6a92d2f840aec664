//! How many connections an SMTP provider opens at once. The pool starts at
//! [`INITIAL`] (or `pool.maxConnections` when lower) and grows while
//! messages wait for a connection (the provider's send slots, which follow
//! the pool, are all held; or every connection is busy) and sends go
//! through: by one for each such send at first (so it doubles in a round of
//! sends, as TCP's slow start does), up to `pool.maxConnections`. A server
//! that refuses one more with a 421 reply (Postfix past its cap) brings the
//! ceiling back to the connections it took, never below the start; it stays
//! there for [`HOLD`] and after that grows by one a round (as many sends as
//! connections). So a server across a network gets the connections its
//! latency needs within a few rounds, and one that caps each client
//! (Postfix: 50) is asked past its cap once in ten minutes, not on every send.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Connections a pool starts with.
pub const INITIAL: u32 = crate::api::provider::POOL_START_CONNECTIONS;

/// How long a ceiling a server pushed down stays before it grows again.
pub const HOLD: Duration = Duration::from_secs(600);

/// What the pool knows now.
struct State {
    /// Connections that may be in use at once.
    ceiling: u32,
    /// Connections in use.
    in_use: u32,
    /// Whether no server refusal was met yet: the ceiling grows by one a
    /// send, not by one a round.
    slow_start: bool,
    /// Sends that went through while messages waited, since the ceiling
    /// last grew.
    round: u32,
    /// Whether a message waited for a connection since the ceiling last grew.
    wanted: bool,
    /// Until when the ceiling does not grow, after a refusal.
    held_until: Option<Instant>,
}

/// The connections of one SMTP provider.
pub struct Connections {
    floor: u32,
    max: u32,
    state: Mutex<State>,
    freed: Notify,
}

/// One connection in use, given back when dropped.
pub struct InUse<'a> {
    connections: &'a Connections,
    /// How many connections were in use with it, itself included.
    position: u32,
    /// Whether every connection the ceiling allows was in use with it.
    full: bool,
}

/// How a send through a connection ended, as the ceiling learns from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server took the message.
    Accepted,
    /// The server refused one more connection, or closed this one (421).
    Refused,
    /// Anything else: nothing learnt.
    Other,
}

impl Connections {
    /// A pool of at most `max` connections (at least one).
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        let floor = INITIAL.min(max);
        Self {
            floor,
            max,
            state: Mutex::new(State {
                ceiling: floor,
                in_use: 0,
                slow_start: true,
                round: 0,
                wanted: false,
                held_until: None,
            }),
            freed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections that may be in use at once now.
    pub fn ceiling(&self) -> u32 {
        self.state().ceiling
    }

    /// `pool.maxConnections`.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Notes that a message waits for a connection: the provider's send
    /// slots, which follow the ceiling, are all held.
    pub fn wanted(&self) {
        self.state().wanted = true;
    }

    /// Waits for a connection the ceiling allows (callers bound the wait).
    pub async fn acquire(&self) -> InUse<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.state();
                if state.in_use < state.ceiling {
                    state.in_use += 1;
                    return InUse {
                        connections: self,
                        position: state.in_use,
                        full: state.in_use == state.ceiling,
                    };
                }
            }
            freed.await;
        }
    }

    /// Learns from a send's end: a send that went through while messages
    /// waited (or on a full pool) grows the ceiling, by one in slow start and
    /// by one a round after; a refusal of the n-th connection in use brings
    /// it down to n - 1, which the server took, held for [`HOLD`].
    fn learn(&self, full: bool, position: u32, ended: Ended, now: Instant) {
        let mut state = self.state();
        match ended {
            Ended::Accepted if (full || state.wanted) && state.ceiling < self.max => {
                if state.held_until.is_some_and(|until| now < until) {
                    return;
                }
                state.held_until = None;
                state.round += 1;
                if state.slow_start || state.round >= state.ceiling {
                    state.round = 0;
                    state.wanted = false;
                    state.ceiling += 1;
                    tracing::debug!(
                        connections = state.ceiling,
                        "the SMTP pool may open one more connection"
                    );
                    drop(state);
                    self.freed.notify_one();
                }
            }
            Ended::Refused => {
                if position <= self.floor {
                    // Within the start: the server is down or refuses even
                    // those, not a cap to learn.
                    return;
                }
                let took = position - 1;
                state.slow_start = false;
                if took < state.ceiling {
                    tracing::info!(
                        connections = took,
                        "the SMTP server refused one connection more: the pool holds at what it took for ten minutes"
                    );
                    state.ceiling = took;
                    state.round = 0;
                    state.wanted = false;
                    state.held_until = Some(now + HOLD);
                }
            }
            Ended::Accepted | Ended::Other => {}
        }
    }
}

impl InUse<'_> {
    /// Whether this connection was one past the pool's start: a refusal may
    /// then be the server's cap, met by growing.
    pub fn past_start(&self) -> bool {
        self.position > self.connections.floor
    }

    /// Gives the connection back, learning from how its send ended.
    pub fn ended(self, ended: Ended) {
        self.connections
            .learn(self.full, self.position, ended, Instant::now());
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.connections.state().in_use -= 1;
        self.connections.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` messages one after another, each ending `ended` at `now`,
    /// with a message waiting for a connection during each when `waiting`.
    async fn sends(connections: &Connections, n: u32, waiting: bool, ended: Ended, now: Instant) {
        for _ in 0..n {
            if waiting {
                connections.wanted();
            }
            let in_use = connections.acquire().await;
            connections.learn(in_use.full, in_use.position, ended, now);
            drop(in_use);
        }
    }

    /// Takes `n` connections and keeps them in use.
    async fn hold(connections: &Connections, n: u32) -> Vec<InUse<'_>> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(connections.acquire().await);
        }
        held
    }

    #[tokio::test]
    async fn starts_at_sixteen_and_grows_by_one_a_send_while_messages_wait() {
        let connections = Connections::new(100);
        assert_eq!(connections.ceiling(), INITIAL);
        let now = Instant::now();
        sends(&connections, 50, false, Ended::Accepted, now).await;
        assert_eq!(
            connections.ceiling(),
            16,
            "sends nobody waited for teach nothing"
        );
        sends(&connections, 4, true, Ended::Accepted, now).await;
        assert_eq!(connections.ceiling(), 20);
        sends(&connections, 4, true, Ended::Other, now).await;
        assert_eq!(connections.ceiling(), 20, "failed sends teach nothing");
    }

    #[tokio::test]
    async fn never_grows_past_max_connections() {
        let connections = Connections::new(40);
        sends(&connections, 100, true, Ended::Accepted, Instant::now()).await;
        assert_eq!(connections.ceiling(), 40);
        assert_eq!(
            Connections::new(3).ceiling(),
            3,
            "a lower maximum is the start"
        );
    }

    #[tokio::test]
    async fn a_refusal_brings_it_back_to_what_the_server_took_then_it_grows_a_round_at_a_time() {
        let connections = Connections::new(100);
        let now = Instant::now();
        sends(&connections, 9, true, Ended::Accepted, now).await;
        assert_eq!(connections.ceiling(), 25);
        // The server takes 20: the 21st and 22nd connections are refused.
        let held = hold(&connections, 22).await;
        let (twenty_first, twenty_second) = (&held[20], &held[21]);
        connections.learn(false, twenty_second.position, Ended::Refused, now);
        assert_eq!(connections.ceiling(), 21);
        connections.learn(false, twenty_first.position, Ended::Refused, now);
        assert_eq!(connections.ceiling(), 20, "the lowest refusal counts");
        drop(held);
        sends(&connections, 100, true, Ended::Accepted, now).await;
        assert_eq!(connections.ceiling(), 20, "held");
        let later = now + HOLD;
        sends(&connections, 19, true, Ended::Accepted, later).await;
        assert_eq!(connections.ceiling(), 20, "a round is 20 sends now");
        sends(&connections, 1, true, Ended::Accepted, later).await;
        assert_eq!(connections.ceiling(), 21);
    }

    #[tokio::test]
    async fn a_refusal_never_goes_below_the_start() {
        let connections = Connections::new(100);
        let held = hold(&connections, 5).await;
        connections.learn(false, held[4].position, Ended::Refused, Instant::now());
        assert_eq!(connections.ceiling(), INITIAL);
        assert!(!held[4].past_start());
    }

    #[tokio::test]
    async fn a_send_waits_for_a_connection_given_back() {
        let connections = std::sync::Arc::new(Connections::new(1));
        let first = connections.acquire().await;
        let waiting = {
            let connections = connections.clone();
            tokio::spawn(async move {
                let _second = connections.acquire().await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the only connection is in use");
        first.ended(Ended::Accepted);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when it was given back")
            .expect("task");
    }
}
