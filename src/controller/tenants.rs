//! The provider's `spec.tenants` as the send path applies them: which
//! policy governs a message's namespace, whether its senders are allowed,
//! and where its mail may go (allowed, redirected for staging, or refused).
//! Pure but for reading a namespace's labels when a policy selects by them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::{Client, ResourceExt};

use crate::api::EmailProvider;
use crate::api::tenancy::TenantPolicy;
use lettre::message::Mailbox;

use crate::compose::Email;

/// The header that keeps a redirected email's original recipients.
pub const ORIGINAL_TO: &str = "X-Original-To";

/// The policy of `provider` that governs `namespace`: the first that picks
/// it. The Namespace is read only when a policy selects by labels.
pub async fn policy_of(
    client: &Client,
    provider: &EmailProvider,
    namespace: &str,
) -> Result<Option<TenantPolicy>, kube::Error> {
    let policies = &provider.spec.tenants;
    if policies.is_empty() {
        return Ok(None);
    }
    let by_labels = policies
        .iter()
        .any(|p| p.namespaces.as_ref().is_some_and(|n| n.selector.is_some()));
    let labels = if by_labels {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .get_opt(namespace)
            .await?
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    Ok(pick(policies, namespace, &labels).cloned())
}

/// The first policy that picks `namespace` (with `labels`).
pub fn pick<'a>(
    policies: &'a [TenantPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a TenantPolicy> {
    policies.iter().find(|policy| {
        let Some(picked) = &policy.namespaces else {
            return true;
        };
        let by_name = picked.names.iter().any(|n| n == namespace);
        let by_labels = picked.selector.as_ref().is_some_and(|selector| {
            Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
        });
        by_name || by_labels
    })
}

/// Whether `address` is one `pattern` names: the address itself, or any
/// address of its domain for `*@domain`; without regard to case.
pub fn matches(pattern: &str, address: &str) -> bool {
    match pattern.strip_prefix("*@") {
        Some(domain) => address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
        None => pattern.eq_ignore_ascii_case(address),
    }
}

fn allowed(patterns: &[String], address: &str) -> bool {
    patterns.iter().any(|p| matches(p, address))
}

/// Why the sender `from` or a reply-to address may not be used under
/// `policy`, naming the field; `None` when they may.
pub fn sender_refusal(
    from: Option<&Mailbox>,
    reply_to: &[Mailbox],
    policy: &TenantPolicy,
) -> Option<String> {
    if policy.senders.is_empty() {
        return None;
    }
    let from = from.map(|m| m.email.to_string()).unwrap_or_default();
    if !allowed(&policy.senders, &from) {
        return Some(format!(
            "spec.from: {from} is not among the senders the provider allows this namespace (spec.tenants[].senders: {}); a message without from uses the provider's defaultFrom",
            policy.senders.join(", ")
        ));
    }
    reply_to
        .iter()
        .enumerate()
        .find(|(_, m)| !allowed(&policy.senders, m.email.as_ref()))
        .map(|(i, m)| {
            format!(
                "spec.replyTo[{i}]: {} is not among the senders the provider allows this namespace (spec.tenants[].senders: {})",
                m.email,
                policy.senders.join(", ")
            )
        })
}

/// What the recipient guard did to an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// Every recipient is allowed (or no guard applies).
    Untouched,
    /// Sent to `to` alone instead of `original` (listed in X-Original-To).
    Redirected {
        /// The redirect address.
        to: String,
        /// The recipients it was meant for.
        original: Vec<String>,
    },
    /// Not sent: the text names the first recipient not allowed.
    Refused(String),
}

/// Applies `policy`'s recipient guard to `email`: unchanged when every
/// recipient is allowed; else sent to the redirect address alone, the
/// original recipients in `X-Original-To`; else refused.
pub fn guard(email: &mut Email, policy: &TenantPolicy, field: &str) -> Guarded {
    let Some(guard) = &policy.recipients else {
        return Guarded::Untouched;
    };
    let lists = [("to", &email.to), ("cc", &email.cc), ("bcc", &email.bcc)];
    let outside = lists.iter().find_map(|(list, mailboxes)| {
        mailboxes
            .iter()
            .position(|m| !allowed(&guard.allow, m.email.as_ref()))
            .map(|i| (*list, i, mailboxes[i].email.to_string()))
    });
    let Some((list, i, address)) = outside else {
        return Guarded::Untouched;
    };
    let Some(redirect) = &guard.redirect_to else {
        let at = if field.is_empty() {
            format!("spec.{list}[{i}]")
        } else {
            field.to_string()
        };
        return Guarded::Refused(format!(
            "{at}: {address} is not among the recipients the provider allows this namespace (spec.tenants[].recipients.allow: {}); nothing was sent",
            guard.allow.join(", ")
        ));
    };
    let Ok(mailbox) = redirect.parse::<Mailbox>() else {
        return Guarded::Refused(format!(
            "spec.tenants[].recipients.redirectTo: {redirect:?} is not an address"
        ));
    };
    let original = email.recipient_addresses();
    email.to = vec![mailbox];
    email.cc.clear();
    email.bcc.clear();
    email
        .headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case(ORIGINAL_TO));
    email
        .headers
        .push((ORIGINAL_TO.to_string(), original.join(", ")));
    email.headers.sort();
    email.redirected_to = Some(redirect.clone());
    Guarded::Redirected {
        to: redirect.clone(),
        original,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster_provider::AllowedNamespaces;
    use crate::api::tenancy::RecipientGuard;

    #[test]
    fn patterns_match_an_address_or_a_whole_domain_without_regard_to_case() {
        assert!(matches("*@Example.com", "billing@example.COM"));
        assert!(matches("App@example.com", "app@EXAMPLE.com"));
        assert!(!matches("*@example.com", "a@evil-example.com"));
        assert!(!matches("*@example.com", "a@sub.example.com"));
        assert!(!matches("app@example.com", "payroll@example.com"));
    }

    #[test]
    fn the_first_policy_that_picks_the_namespace_governs_it() {
        let policy = |names: &[&str], hour| TenantPolicy {
            namespaces: Some(AllowedNamespaces {
                names: names.iter().map(|n| n.to_string()).collect(),
                selector: None,
            }),
            messages_per_hour: Some(hour),
            ..Default::default()
        };
        let everyone = TenantPolicy {
            messages_per_hour: Some(1),
            ..Default::default()
        };
        let policies = vec![policy(&["a"], 10), policy(&["a", "b"], 20), everyone];
        let none = BTreeMap::new();
        let hour = |ns| pick(&policies, ns, &none).and_then(|p| p.messages_per_hour);
        assert_eq!(hour("a"), Some(10));
        assert_eq!(hour("b"), Some(20));
        assert_eq!(hour("c"), Some(1));
        assert_eq!(pick(&policies[..2], "c", &none), None);
    }

    fn email(to: &[&str]) -> Email {
        let spec: crate::api::EmailMessageSpec = serde_json::from_value(serde_json::json!({
            "providerRef": {"name": "p"}, "from": "app@company.example", "to": to,
            "replyTo": ["help@company.example"], "subject": "s", "text": "t"
        }))
        .expect("a spec");
        crate::compose::compose(&spec, None, "k").expect("an email")
    }

    #[test]
    fn a_sender_outside_the_list_is_refused_naming_the_field() {
        let mut policy = TenantPolicy {
            senders: vec!["*@company.example".into()],
            ..Default::default()
        };
        let e = email(&["a@x.example"]);
        let refusal = |policy: &TenantPolicy| sender_refusal(Some(&e.from), &e.reply_to, policy);
        assert_eq!(refusal(&policy), None);
        policy.senders = vec!["app@company.example".into()];
        let text = refusal(&policy).expect("refused");
        assert!(
            text.starts_with("spec.replyTo[0]: help@company.example"),
            "{text}"
        );
        policy.senders = vec!["*@team.example".into()];
        let text = refusal(&policy).expect("refused");
        assert!(text.starts_with("spec.from: app@company.example"), "{text}");
    }

    #[test]
    fn mail_outside_the_allow_list_is_redirected_or_refused() {
        let mut policy = TenantPolicy {
            recipients: Some(RecipientGuard {
                allow: vec!["*@company.example".into()],
                redirect_to: Some("qa@company.example".into()),
            }),
            ..Default::default()
        };
        let mut inside = email(&["dev@company.example"]);
        assert_eq!(guard(&mut inside, &policy, ""), Guarded::Untouched);
        let mut outside = email(&["dev@company.example", "customer@gmail.example"]);
        let guarded = guard(&mut outside, &policy, "");
        assert_eq!(
            guarded,
            Guarded::Redirected {
                to: "qa@company.example".into(),
                original: vec![
                    "dev@company.example".into(),
                    "customer@gmail.example".into()
                ],
            }
        );
        assert_eq!(outside.to.len(), 1);
        assert_eq!(outside.to[0].email.to_string(), "qa@company.example");
        assert!(outside.headers.contains(&(
            ORIGINAL_TO.into(),
            "dev@company.example, customer@gmail.example".into()
        )));
        if let Some(guard) = policy.recipients.as_mut() {
            guard.redirect_to = None;
        }
        let mut refused = email(&["customer@gmail.example"]);
        let Guarded::Refused(text) = guard(&mut refused, &policy, "") else {
            panic!("refused");
        };
        assert!(
            text.starts_with("spec.to[0]: customer@gmail.example"),
            "{text}"
        );
    }
}
