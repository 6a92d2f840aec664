//! A message sent through a provider that delivers nothing (`api.testMode`,
//! or a Mailtrap sandbox) is Sent with reason TestMode, its condition
//! saying nothing was delivered, so nobody takes it for real delivery.

use crate::api::condition::{self, Reason, SENT};
use crate::api::provider::{ApiProvider, ApiSpec};
use crate::api::{EmailMessageStatus, EmailProvider, Phase};

/// How the service's test mode works, in words.
fn how(api: &ApiSpec) -> &'static str {
    match api.provider {
        ApiProvider::Postmark => "its test server token",
        ApiProvider::Mailgun => "o:testmode",
        ApiProvider::SendGrid => "sandbox mode",
        ApiProvider::Resend => "every recipient sent to delivered@resend.dev",
        ApiProvider::Mailtrap => "its sandbox inbox",
    }
}

/// Marks `status` TestMode when it is Sent through such a provider.
pub fn mark(status: &mut EmailMessageStatus, provider: &EmailProvider, generation: Option<i64>) {
    let Some(api) = provider.spec.api.as_ref().filter(|a| a.delivers_nothing()) else {
        return;
    };
    if status.phase != Some(Phase::Sent) {
        return;
    }
    let Some(sent) = condition::find(&status.conditions, SENT) else {
        return;
    };
    let text = format!(
        "test mode ({}: {}): nothing was delivered; {}",
        api.provider.name(),
        how(api),
        sent.message
    );
    condition::set(
        &mut status.conditions,
        SENT,
        true,
        Reason::TestMode,
        text,
        generation,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_sent_message_through_a_test_provider_is_marked() {
        let provider = |test: bool| -> EmailProvider {
            serde_json::from_value(
                json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
                "metadata": {"name": "p"},
                "spec": {"api": {"provider": "Mailgun", "secretRef": {"name": "k"},
                                 "mailgun": {"domain": "mg.example.com"}, "testMode": test}}}),
            )
            .expect("provider")
        };
        let mut status = EmailMessageStatus {
            phase: Some(Phase::Sent),
            ..Default::default()
        };
        condition::set(
            &mut status.conditions,
            SENT,
            true,
            Reason::Accepted,
            "accepted: 200 Queued",
            None,
        );
        let mut real = status.clone();
        mark(&mut real, &provider(false), None);
        assert_eq!(
            condition::find(&real.conditions, SENT).map(|c| c.reason.clone()),
            Some("Accepted".into())
        );
        mark(&mut status, &provider(true), None);
        let sent = condition::find(&status.conditions, SENT).expect("Sent");
        assert_eq!(sent.reason, "TestMode");
        assert!(
            sent.message
                .starts_with("test mode (Mailgun: o:testmode): nothing was delivered"),
            "{}",
            sent.message
        );
    }
}
