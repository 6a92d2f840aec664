//! What decides whether bulk mail reaches the inbox, beside DKIM: one-click
//! unsubscribe (RFC 2369 `List-Unsubscribe`, RFC 8058
//! `List-Unsubscribe-Post`) and the services' open and click tracking.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// The longest unsubscribe URL template accepted.
pub const URL_MAX_LENGTH: usize = 900;

/// How a recipient unsubscribes, written as the `List-Unsubscribe` header
/// (and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` with a URL), over
/// SMTP and as a custom header through every service. Gmail and Yahoo
/// require one-click unsubscribe (an https URL) from bulk senders.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) || has(self.mailto)").message("unsubscribe needs a url, a mailto address or both"))]
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
