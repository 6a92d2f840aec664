//! Which bounce mailboxes are polled next, fairly between tenants: only
//! those whose `pollSeconds` have passed, at most one per namespace at a
//! time (the cluster providers count as one namespace), and the namespace
//! served longest ago first. One tenant's slow or silent mailboxes then hold
//! at most one of the poll slots, and every other tenant's turn comes
//! within one round of the slots.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::ProviderId;

/// A mailbox that may be polled: its provider and how often.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The provider.
    pub id: ProviderId,
    /// Its `pollSeconds`.
    pub every: Duration,
}

/// When each mailbox is due, and when each namespace was last served.
#[derive(Default)]
pub struct Schedule {
    due: HashMap<ProviderId, Instant>,
    served: HashMap<String, Instant>,
}

/// The fairness bucket of a provider: its namespace, or one for all
/// cluster providers.
fn bucket(id: &ProviderId) -> String {
    match id {
        ProviderId::Namespaced { namespace, .. } => namespace.clone(),
        ProviderId::Cluster { .. } => "/cluster".to_string(),
    }
}

impl Schedule {
    /// Picks at most `free` of `candidates` to poll now (none of `running`,
    /// nor of a namespace one of them belongs to) and marks them started.
    pub fn pick(
        &mut self,
        candidates: &[Candidate],
        running: &HashSet<ProviderId>,
        free: usize,
        now: Instant,
    ) -> Vec<ProviderId> {
        let busy: HashSet<String> = running.iter().map(bucket).collect();
        let mut due: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| !running.contains(&c.id) && !busy.contains(&bucket(&c.id)))
            .filter(|c| self.due.get(&c.id).is_none_or(|t| *t <= now))
            .collect();
        // The namespace served longest ago (never: first), then the mailbox
        // due longest ago.
        due.sort_by_key(|c| {
            (
                self.served.get(&bucket(&c.id)).copied(),
                self.due.get(&c.id).copied(),
            )
        });
        let mut picked = Vec::new();
        let mut taken: HashSet<String> = HashSet::new();
        for candidate in due {
            if picked.len() >= free {
                break;
            }
            let namespace = bucket(&candidate.id);
            if !taken.insert(namespace.clone()) {
                continue;
            }
            self.due.insert(candidate.id.clone(), now + candidate.every);
            self.served.insert(namespace, now);
            picked.push(candidate.id.clone());
        }
        picked
    }

    /// Forgets mailboxes and namespaces no longer among `present`.
    pub fn retain(&mut self, present: &HashSet<ProviderId>) {
        self.due.retain(|id, _| present.contains(id));
        let namespaces: HashSet<String> = present.iter().map(bucket).collect();
        self.served.retain(|n, _| namespaces.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(namespace: &str, name: &str) -> Candidate {
        Candidate {
            id: ProviderId::Namespaced {
                namespace: namespace.into(),
                name: name.into(),
            },
            every: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_tenant_with_many_mailboxes_holds_one_slot_and_others_get_theirs() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        let mut candidates: Vec<Candidate> = (0..50)
            .map(|i| mailbox("hostile", &format!("m{i}")))
            .collect();
        candidates.push(mailbox("shop", "relay"));
        candidates.push(mailbox("blog", "relay"));
        let picked = schedule.pick(&candidates, &HashSet::new(), 4, now);
        let namespaces: HashSet<String> = picked.iter().map(bucket).collect();
        assert_eq!(picked.len(), 3, "one per namespace: {picked:?}");
        assert_eq!(namespaces.len(), 3);

        // While the hostile tenant's poll runs (a silent server), its other
        // mailboxes wait; the others are polled again when due.
        let hostile = picked
            .iter()
            .find(|id| bucket(id) == "hostile")
            .cloned()
            .expect("hostile");
        let running: HashSet<ProviderId> = [hostile].into();
        let later = now + Duration::from_secs(10);
        let picked = schedule.pick(&candidates, &running, 3, later);
        let namespaces: HashSet<String> = picked.iter().map(bucket).collect();
        assert_eq!(namespaces, ["shop".to_string(), "blog".to_string()].into());
    }

    #[test]
    fn the_namespace_served_longest_ago_goes_first_and_nothing_is_polled_before_it_is_due() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        let candidates = vec![mailbox("a", "m"), mailbox("b", "m"), mailbox("c", "m")];
        // One slot at a time: each pick serves a namespace not served yet.
        let order: Vec<String> = (0..3)
            .flat_map(|_| schedule.pick(&candidates, &HashSet::new(), 1, now))
            .map(|id| bucket(&id))
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
        // Everybody polled: nothing is due until pollSeconds pass.
        assert!(
            schedule
                .pick(&candidates, &HashSet::new(), 4, now)
                .is_empty()
        );
        let due = now + Duration::from_secs(10);
        assert_eq!(schedule.pick(&candidates, &HashSet::new(), 4, due).len(), 3);
    }
}
