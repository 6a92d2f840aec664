//! What decides whether bulk mail reaches the inbox, beside DKIM: one-click
//! unsubscribe (RFC 2369 `List-Unsubscribe`, RFC 8058
//! `List-Unsubscribe-Post`) and the services' open and click tracking.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// The longest unsubscribe URL template accepted.
pub const URL_MAX_LENGTH: usize = 900;

/// The list a message with unsubscribe headers and no `list` of its own
/// belongs to.
pub const DEFAULT_LIST: &str = "default";

/// How a recipient unsubscribes, written as the `List-Unsubscribe` header
/// (and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` with a URL), over
/// SMTP and as a custom header through every service. Gmail and Yahoo
/// require one-click unsubscribe (an https URL) from bulk senders.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) || has(self.mailto) || has(self.hosted)").message("unsubscribe needs a url, hosted or a mailto address (a mailto beside either)"))]
#[x_kube(validation = Rule::new("!(has(self.url) && has(self.hosted))").message("unsubscribe takes a url of your own or hosted, not both"))]
pub struct Unsubscribe {
    /// The https URL a mail client POSTs `List-Unsubscribe=One-Click` to
    /// (RFC 8058): it must unsubscribe without asking anything more. A
    /// Handlebars template rendered for each recipient: `{{recipient}}` is
    /// the recipient's address (a single message's first recipient), and the message's `data` (with a bulk
    /// recipient's own `data` laid over it) supplies the rest, e.g.
    /// `https://example.com/unsubscribe?list=news&u={{userId}}`. Every value
    /// is percent-encoded (so `{{{...}}}` and `{{&...}}` are refused); a
    /// variable the data lacks fails that recipient naming this field. No
    /// spaces, quotes, `<`, `>` or `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 900))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("unsubscribe.url must be an https:// URL (RFC 8058 one-click needs https)"))]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\x00-\\\\x20\\\\x7f<>,\"\\']+$')").message("unsubscribe.url may not contain spaces, control characters, quotes, <, > or ,"))]
    #[x_kube(validation = Rule::new("!self.contains('{{{') && !self.contains('{{&')").message("unsubscribe.url may not use {{{...}}} or {{&...}}: every value is percent-encoded"))]
    pub url: Option<String>,
    /// An address that unsubscribes whoever mails it (written as
    /// `<mailto:ADDRESS?subject=unsubscribe>`), for clients without
    /// one-click.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::address")]
    pub mailto: Option<String>,
    /// mailroom answers the one-click unsubscribe itself, on the webhook
    /// receiver's port: each recipient's URL is
    /// `{baseURL}/unsubscribe/{namespace}/{list}/{token}`, the token sealed
    /// with the controller's unsubscribe key (it names one address on one
    /// list, and cannot be forged or read). A POST there records an
    /// EmailSuppression (reason Unsubscribed) for the list; a GET shows a
    /// page with a button that POSTs. With a bounce mailbox on the
    /// provider (and no `mailto` here), a mailto address on that mailbox is
    /// written too, and unsubscribe mails to it are recorded the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted: Option<HostedUnsubscribe>,
    /// The mailing list messages with these headers belong to, when they
    /// name none (`spec.list`); default `default`. An unsubscribe is from
    /// one list: later messages on it skip the address, other lists and
    /// transactional messages (no list, no unsubscribe headers) still reach
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::list_name")]
    pub list: Option<String>,
}

/// Where mailroom's own unsubscribe endpoint is reached from the internet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct HostedUnsubscribe {
    /// The public https URL of the webhook receiver (the Ingress or load
    /// balancer in front of its port), e.g. `https://mail.example.com` or
    /// `https://example.com/mailroom`; `/unsubscribe/...` is added to it.
    /// No query, fragment or trailing `/`.
    #[serde(rename = "baseURL")]
    #[schemars(
        length(min = 9, max = 200),
        regex(
            pattern = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+;=:@-]+)*$"
        )
    )]
    pub base_url: String,
}

impl Unsubscribe {
    /// The list of messages carrying these headers that name none.
    pub fn list(&self) -> &str {
        self.list.as_deref().unwrap_or(DEFAULT_LIST)
    }
}

/// The unsubscribe a message's emails carry: its own, else its provider's
/// when it is a bulk message or names a list. Transactional messages (no
/// list, none of their own) carry none.
pub fn in_effect<'a>(
    spec: &'a super::EmailMessageSpec,
    provider: Option<&'a Unsubscribe>,
) -> Option<&'a Unsubscribe> {
    let listed = !spec.recipients.is_empty() || spec.list.is_some();
    spec.unsubscribe.as_ref().or(provider.filter(|_| listed))
}

/// The mailing list a message is on: its `list`, else the list of the
/// unsubscribe it carries, else none (a transactional message).
pub fn list_of(spec: &super::EmailMessageSpec, provider: Option<&Unsubscribe>) -> Option<String> {
    spec.list
        .clone()
        .or_else(|| in_effect(spec, provider).map(|u| u.list().to_string()))
}

/// Open and click tracking, as the email service does it (it rewrites links
/// and adds a pixel): Postmark `TrackOpens`/`TrackLinks`, SendGrid
/// `tracking_settings`, Mailgun `o:tracking-opens`/`o:tracking-clicks`.
/// Mailtrap and Resend set tracking per sending domain in their dashboards
/// and take no per-message setting; SMTP servers do not track.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Tracking {
    /// Count opens (a tracking pixel in the html body). Unset: the
    /// service's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens: Option<bool>,
    /// Count clicks (links in the html and text bodies rewritten through the
    /// service). Unset: the service's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clicks: Option<bool>,
}

impl Tracking {
    /// `self` laid over `default`, setting by setting.
    pub fn over(self, default: Tracking) -> Tracking {
        Tracking {
            opens: self.opens.or(default.opens),
            clicks: self.clicks.or(default.clicks),
        }
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.opens.is_none() && self.clicks.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_setting_overrides_the_providers_one_by_one() {
        let provider = Tracking {
            opens: Some(true),
            clicks: Some(true),
        };
        let message = Tracking {
            opens: None,
            clicks: Some(false),
        };
        assert_eq!(
            message.over(provider),
            Tracking {
                opens: Some(true),
                clicks: Some(false)
            }
        );
        assert!(Tracking::default().is_empty());
    }
}
