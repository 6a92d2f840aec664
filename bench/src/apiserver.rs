//! The apiserver's own count of requests (`apiserver_request_total` on its
//! /metrics), to report what each message costs it, by verb.

use std::collections::BTreeMap;

use kube::Client;

use crate::Error;

/// Requests by `VERB resource[/subresource]`, for the resources a message
/// touches: emailmessages (and its status) and events.
pub type Counts = BTreeMap<String, f64>;

/// Reads the counters now.
pub async fn counts(client: &Client) -> Result<Counts, Error> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| Error::Setup(format!("metrics request: {e}")))?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| Error::Setup(format!("reading the apiserver's /metrics: {e}")))?;
    Ok(parse(&text))
}

fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    labels
        .find(&key)
        .map(|i| &labels[i + key.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// `apiserver_request_total` lines for messages, events, ledger pages and claim journals, summed by verb,
/// resource and subresource.
pub fn parse(text: &str) -> Counts {
    let mut counts = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let resource = label(labels, "resource");
        if !["emailmessages", "events", "emailledgers", "emailjournals"].contains(&resource) {
            continue;
        }
        let sub = label(labels, "subresource");
        let verb = label(labels, "verb");
        let key = if sub.is_empty() {
            format!("{verb} {resource}")
        } else {
            format!("{verb} {resource}/{sub}")
        };
        *counts.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// What happened between two readings, per message.
pub fn per_message(before: &Counts, after: &Counts, messages: usize) -> Counts {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) / messages as f64,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The writes among them on `resource` (create, update, patch, delete).
pub fn writes(per_message: &Counts, resource: &str) -> f64 {
    per_message
        .iter()
        .filter(|(k, _)| {
            ["POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .any(|w| k.starts_with(w))
        })
        .filter(|(k, _)| {
            k.split(' ')
                .nth(1)
                .is_some_and(|r| r.split('/').next() == Some(resource))
        })
        .map(|(_, v)| v)
        .fold(0.0, |sum, v| sum + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_message_requests_by_verb() {
        let text = r#"
apiserver_request_total{code="201",component="apiserver",dry_run="",group="mailroom.dev",resource="emailmessages",scope="resource",subresource="",verb="POST",version="v1alpha1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="mailroom.dev",resource="emailmessages",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 20
apiserver_request_total{code="409",component="apiserver",dry_run="",group="mailroom.dev",resource="emailmessages",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 5
"#;
        let counts = parse(text);
        assert_eq!(counts.get("POST emailmessages"), Some(&10.0));
        assert_eq!(counts.get("PUT emailmessages/status"), Some(&21.0));
        assert_eq!(counts.len(), 2);
        let per = per_message(&Counts::new(), &counts, 10);
        assert_eq!(writes(&per, "emailmessages"), 3.1);
        assert_eq!(writes(&per, "events"), 0.0);
    }
}
