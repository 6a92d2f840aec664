//! What each part of a status costs the apiserver: the statuses an operator
//! run wrote, less one part at a time, written again by the load client as a
//! same-writes limit run. Each variant's throughput against the unchanged
//! statuses (measured once more after them, to see the drift) says what
//! slimming that part would buy, before the controller changes.

use mailroom::api::EmailMessageStatus;
use mailroom::api::condition::SENT;

use crate::load::Written;

/// The kind of run a variant is reported as: this, a space, its name.
pub const KIND: &str = "limit-variant";

/// One way to slim the statuses, named as the report prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The statuses as written, again: the run-to-run noise.
    Unchanged,
    /// No `observedGeneration` on each condition (the spec is immutable, so
    /// it is always the object's generation, also in the status itself).
    NoConditionGenerations,
    /// The Sent message's conditions say "accepted by the server on attempt
    /// 1" without the server's reply (it stays in `serverReply`).
    ShortSentMessage,
    /// The claim carries only its Sent condition, not Ready and Reconciling.
    ClaimSentConditionOnly,
    /// No conditions at all, in the claim or the outcome: the most slimming
    /// the conditions could buy.
    NoConditions,
}

impl Variant {
    /// Every variant, in the order they run.
    pub const ALL: [Variant; 5] = [
        Variant::Unchanged,
        Variant::NoConditionGenerations,
        Variant::ShortSentMessage,
        Variant::ClaimSentConditionOnly,
        Variant::NoConditions,
    ];

    /// The kind of its run in the report.
    pub fn kind(self) -> String {
        format!("{KIND} {}", self.name())
    }

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Unchanged => "unchanged",
            Variant::NoConditionGenerations => "no-condition-generations",
            Variant::ShortSentMessage => "short-sent-message",
            Variant::ClaimSentConditionOnly => "claim-sent-condition-only",
            Variant::NoConditions => "no-conditions",
        }
    }

    /// `written`, slimmed as this variant says.
    pub fn apply(self, written: &Written) -> Written {
        let mut slim = written.clone();
        let statuses = slim.claim.iter_mut().chain(std::iter::once(&mut slim.sent));
        match self {
            Variant::Unchanged => {}
            Variant::NoConditionGenerations => statuses.for_each(|s| {
                s.conditions
                    .iter_mut()
                    .for_each(|c| c.observed_generation = None)
            }),
            Variant::ShortSentMessage => shorten_sent(&mut slim.sent),
            Variant::ClaimSentConditionOnly => {
                if let Some(claim) = slim.claim.as_mut() {
                    claim.conditions.retain(|c| c.type_ == SENT);
                }
            }
            Variant::NoConditions => statuses.for_each(|s| s.conditions.clear()),
        }
        slim
    }
}

/// The conditions of a Sent status, each saying on which attempt it was
/// accepted and no more.
fn shorten_sent(sent: &mut EmailMessageStatus) {
    let text = format!("accepted by the server on attempt {}", sent.attempts);
    for condition in &mut sent.conditions {
        condition.message = text.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use mailroom::api::Phase;

    fn condition(type_: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Accepted".into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn written() -> Written {
        let status = |phase, types: &[&str]| EmailMessageStatus {
            phase: Some(phase),
            attempts: 1,
            conditions: types
                .iter()
                .map(|t| condition(t, "accepted by the server on attempt 1: 250 2.0.0 Ok"))
                .collect(),
            ..Default::default()
        };
        Written {
            claim: Some(status(Phase::Sending, &["Sent", "Ready", "Reconciling"])),
            sent: status(Phase::Sent, &["Sent", "Ready"]),
        }
    }

    #[test]
    fn each_variant_slims_only_its_part() {
        let base = written();
        assert_eq!(Variant::Unchanged.apply(&base).sent, base.sent);

        let slim = Variant::NoConditionGenerations.apply(&base);
        let all: Vec<_> = slim.claim.iter().chain([&slim.sent]).collect();
        assert!(
            all.iter()
                .all(|s| s.conditions.iter().all(|c| c.observed_generation.is_none()))
        );
        assert_eq!(slim.sent.conditions.len(), 2);

        let slim = Variant::ShortSentMessage.apply(&base);
        assert!(
            slim.sent
                .conditions
                .iter()
                .all(|c| c.message == "accepted by the server on attempt 1")
        );
        assert_eq!(slim.claim, base.claim);

        let slim = Variant::ClaimSentConditionOnly.apply(&base);
        let claim = slim.claim.expect("claim");
        assert_eq!(claim.conditions.len(), 1);
        assert_eq!(claim.conditions[0].type_, "Sent");
        assert_eq!(slim.sent, base.sent);

        let slim = Variant::NoConditions.apply(&base);
        assert!(slim.sent.conditions.is_empty());
        assert!(slim.claim.expect("claim").conditions.is_empty());
    }
}
