//! The conditions GitOps tools read for health, derived from what the
//! status already says, so every status write carries them. They follow
//! kstatus (what Flux and kpt compute): `Ready` True when the object is
//! where it should be, `Reconciling` True while mailroom is still working
//! on it, `Stalled` True when it will not get there without a person. The
//! Argo CD health checks in `deploy/argocd/` read the same fields.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::condition::{DELIVERED, READY, SENT};
use super::message::{EmailMessageStatus, Phase};

/// `Reconciling`: mailroom is still working toward the object's end state.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled`: the object will not reach its end state on its own.
pub const STALLED: &str = "Stalled";

/// Provider `Ready` reasons that no retry fixes: the spec, the credentials
/// or the service's answer must change first.
const PROVIDER_STALLED_REASONS: &[&str] = &[
    "InvalidSpec",
    "AuthFailed",
    "TLSFailed",
    "NotFound",
    "MethodNotAllowed",
    "Refused",
];

/// Sets `Ready`, `Reconciling` and `Stalled` on a message's status from its
/// phase, with the reason and message of the condition that explains it.
pub fn message(status: &mut EmailMessageStatus, generation: Option<i64>) {
    let explaining = |type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let sent = explaining(SENT);
    let delivered = explaining(DELIVERED);
    let waiting = || {
        sent.clone()
            .unwrap_or_else(|| ("Pending".into(), "waiting for the controller".into()))
    };
    let (ready, progressing, stalled, (reason, text)) = match status.phase {
        None | Some(Phase::Pending) | Some(Phase::Sending) => (false, true, false, waiting()),
        // A dry run is done: Ready, as GitOps tools read it.
        Some(Phase::Sent) | Some(Phase::DryRun) => (true, false, false, waiting()),
        Some(Phase::Delivered) | Some(Phase::Complained) => {
            (true, false, false, delivered.unwrap_or_else(waiting))
        }
        Some(Phase::Bounced) => (false, false, true, delivered.unwrap_or_else(waiting)),
        Some(Phase::Failed) | Some(Phase::Unknown) => (false, false, true, waiting()),
    };
    let conditions = &mut status.conditions;
    put(conditions, READY, ready, &reason, &text, generation);
    keep_if(
        conditions,
        RECONCILING,
        progressing,
        &reason,
        &text,
        generation,
    );
    keep_if(conditions, STALLED, stalled, &reason, &text, generation);
}

/// Sets `Reconciling` or `Stalled` on a provider's conditions from its
/// `Ready` condition: a reason no retry fixes stalls it.
pub fn provider(conditions: &mut Vec<Condition>, generation: Option<i64>) {
    let ready = conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()));
    let (ready, reason, text) = ready.unwrap_or((false, "Pending".into(), String::new()));
    let stalled = !ready && PROVIDER_STALLED_REASONS.contains(&reason.as_str());
    keep_if(
        conditions,
        RECONCILING,
        !ready && !stalled,
        &reason,
        &text,
        generation,
    );
    keep_if(conditions, STALLED, stalled, &reason, &text, generation);
}

/// Sets `type_` True with the reason when `wanted`, removes it otherwise
/// (kstatus reads an absent Reconciling or Stalled as False).
fn keep_if(
    conditions: &mut Vec<Condition>,
    type_: &str,
    wanted: bool,
    reason: &str,
    text: &str,
    generation: Option<i64>,
) {
    if wanted {
        put(conditions, type_, true, reason, text, generation);
    } else {
        conditions.retain(|c| c.type_ != type_);
    }
}

fn put(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    text: &str,
    generation: Option<i64>,
) {
    let status = if value { "True" } else { "False" };
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: text.to_string(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{self, Reason};

    fn status(phase: Option<Phase>, sent: Option<(bool, Reason)>) -> EmailMessageStatus {
        let mut status = EmailMessageStatus {
            phase,
            ..Default::default()
        };
        if let Some((value, reason)) = sent {
            condition::set(&mut status.conditions, SENT, value, reason, "why", Some(1));
        }
        message(&mut status, Some(1));
        status
    }

    fn shape(status: &EmailMessageStatus) -> (String, bool, bool, String) {
        let ready = condition::find(&status.conditions, READY).expect("Ready");
        (
            ready.status.clone(),
            condition::find(&status.conditions, RECONCILING).is_some(),
            condition::find(&status.conditions, STALLED).is_some(),
            ready.reason.clone(),
        )
    }

    #[test]
    fn each_phase_reads_as_kstatus_expects() {
        let t = |s: &str| s.to_string();
        let cases = [
            (status(None, None), (t("False"), true, false, t("Pending"))),
            (
                status(Some(Phase::Pending), Some((false, Reason::Scheduled))),
                (t("False"), true, false, t("Scheduled")),
            ),
            (
                status(Some(Phase::Sent), Some((true, Reason::AlreadySent))),
                (t("True"), false, false, t("AlreadySent")),
            ),
            (
                status(Some(Phase::Failed), Some((false, Reason::Rejected))),
                (t("False"), false, true, t("Rejected")),
            ),
            (
                status(Some(Phase::Unknown), Some((false, Reason::OutcomeUnknown))),
                (t("False"), false, true, t("OutcomeUnknown")),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(shape(&status), expected, "{:?}", status.phase);
        }
    }

    #[test]
    fn a_message_moving_on_drops_what_no_longer_applies() {
        let mut status = status(Some(Phase::Sending), Some((false, Reason::Sending)));
        status.phase = Some(Phase::Sent);
        condition::set(
            &mut status.conditions,
            SENT,
            true,
            Reason::Accepted,
            "ok",
            Some(1),
        );
        message(&mut status, Some(1));
        assert_eq!(
            shape(&status),
            ("True".into(), false, false, "Accepted".into())
        );
        status.phase = Some(Phase::Bounced);
        condition::set(
            &mut status.conditions,
            DELIVERED,
            false,
            Reason::Bounced,
            "550",
            Some(1),
        );
        message(&mut status, Some(1));
        assert_eq!(
            shape(&status),
            ("False".into(), false, true, "Bounced".into())
        );
    }

    #[test]
    fn a_provider_stalls_only_for_what_no_retry_fixes() {
        let mut conditions = Vec::new();
        condition::set(
            &mut conditions,
            READY,
            false,
            Reason::Unreachable,
            "down",
            Some(2),
        );
        provider(&mut conditions, Some(2));
        assert!(condition::find(&conditions, RECONCILING).is_some());
        condition::set(
            &mut conditions,
            READY,
            false,
            Reason::InvalidSpec,
            "bad",
            Some(2),
        );
        provider(&mut conditions, Some(2));
        assert!(condition::find(&conditions, RECONCILING).is_none());
        assert!(condition::find(&conditions, STALLED).is_some());
        condition::set(
            &mut conditions,
            READY,
            true,
            Reason::Verified,
            "ok",
            Some(2),
        );
        provider(&mut conditions, Some(2));
        assert_eq!(conditions.len(), 1, "only Ready");
    }
}
