//! What each service echoes in its webhooks about an email it accepted: the
//! metadata sent with it (Mailtrap `custom_variables`, Resend `tags`,
//! Postmark `Metadata`, Mailgun `v:` variables, SendGrid `custom_args`,
//! per-personalization ones laid over the message's), read from the
//! recorded request, one entry per email the request carried.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Recorded, Service};

/// One email of a request: its first recipient and the metadata echoed.
pub type Item = (String, BTreeMap<String, String>);

fn strings(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn resend_tags(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| {
                    Some((
                        t.get("name")?.as_str()?.to_string(),
                        t.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The address inside `Name <address>` or a bare address.
fn address(text: &str) -> String {
    let text = text.trim();
    match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].to_string(),
        _ => text.to_string(),
    }
}

fn first_address(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => address(s.split(',').next().unwrap_or_default()),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::String(s)) => address(s),
            Some(other) => other
                .get("email")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        },
        _ => String::new(),
    }
}

/// The emails `request` carried, each with what its webhooks echo.
pub fn items(request: &Recorded) -> Vec<Item> {
    let body = &request.body;
    match request.service {
        Service::Mailtrap => match body.get("requests").and_then(Value::as_array) {
            Some(requests) => {
                let base = strings(body.get("base").and_then(|b| b.get("custom_variables")));
                requests
                    .iter()
                    .map(|r| {
                        let mut echoed = base.clone();
                        echoed.extend(strings(r.get("custom_variables")));
                        (first_address(r.get("to")), echoed)
                    })
                    .collect()
            }
            None => vec![(
                first_address(body.get("to")),
                strings(body.get("custom_variables")),
            )],
        },
        Service::Resend => match body.as_array() {
            Some(list) => list
                .iter()
                .map(|e| (first_address(e.get("to")), resend_tags(e.get("tags"))))
                .collect(),
            None => vec![(first_address(body.get("to")), resend_tags(body.get("tags")))],
        },
        Service::Postmark => {
            let list = body
                .as_array()
                .or_else(|| body.get("Messages").and_then(Value::as_array));
            match list {
                Some(list) => list
                    .iter()
                    .map(|m| (first_address(m.get("To")), strings(m.get("Metadata"))))
                    .collect(),
                None => vec![(first_address(body.get("To")), strings(body.get("Metadata")))],
            }
        }
        Service::Mailgun => {
            let fields: Vec<(String, String)> = body
                .as_array()
                .map(|fields| {
                    fields
                        .iter()
                        .filter_map(|f| {
                            Some((
                                f.get(0)?.as_str()?.to_string(),
                                f.get(1)?.as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let variables: BTreeMap<String, String> = fields
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("v:")?.to_string(), v.clone())))
                .collect();
            fields
                .iter()
                .filter(|(k, _)| k == "to")
                .map(|(_, to)| (address(to), variables.clone()))
                .collect()
        }
        Service::SendGrid => {
            let base = strings(body.get("custom_args"));
            body.get("personalizations")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|p| {
                            let mut echoed = base.clone();
                            echoed.extend(strings(p.get("custom_args")));
                            (first_address(p.get("to")), echoed)
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
    }
}
