//! The batch endpoints, each judging every item as its single-send endpoint
//! does: Mailtrap `POST /api/batch` (`{base, requests}`, at most 500, 200
//! with a result per item), Resend `POST /emails/batch` (at most 100; strict:
//! the first invalid item fails the whole batch; `x-batch-validation:
//! permissive`: valid items are sent and errors listed by index), and
//! Postmark `POST /email/batch` / `/email/batchWithTemplates` (at most 500,
//! 200 with a result per item).

use serde_json::{Map, Value, json};

use crate::{Answer, Config, Incoming, mailtrap, postmark, resend};

/// What a batch delivered: the answer, with the first accepted id and the
/// number of emails the real service would deliver.
fn delivered(answer: Answer, ids: &[String]) -> Answer {
    match ids.first() {
        Some(first) => answer.accepted_id(first.clone()).delivering(ids.len()),
        None => answer,
    }
}

fn merged(base: Option<&Map<String, Value>>, item: &Value) -> Value {
    let mut object = base.cloned().unwrap_or_default();
    if let Some(fields) = item.as_object() {
        object.extend(fields.clone());
    }
    Value::Object(object)
}

pub fn mailtrap(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    let bad = |message: &str| Answer::json(400, json!({"success": false, "errors": [message]}));
    if incoming.raw.len() > BATCH_BYTES {
        return bad("the batch payload may not exceed 50 MB");
    }
    let Some(object) = body.as_object() else {
        return bad("request body must be a JSON object");
    };
    if let Some(key) = object.keys().find(|k| *k != "base" && *k != "requests") {
        return bad(&format!("'{key}' is not a permitted field"));
    }
    let base = match object.get("base") {
        None => None,
        Some(Value::Object(base)) => Some(base),
        Some(_) => return bad("'base' must be an object"),
    };
    let Some(requests) = object.get("requests").and_then(Value::as_array) else {
        return bad("'requests' is required");
    };
    if requests.is_empty() || requests.len() > 500 {
        return bad("'requests' must have between 1 and 500 items");
    }
    let mut responses = Vec::new();
    let mut ids = Vec::new();
    for item in requests {
        let answer = mailtrap::handle(config, incoming, &merged(base, item));
        if answer.status == 401 {
            return answer;
        }
        let body = answer.body.unwrap_or_default();
        if answer.status == 200 {
            if let Some(first) = body["message_ids"].get(0).and_then(Value::as_str) {
                ids.push(first.to_string());
            }
            responses.push(json!({"success": true, "message_ids": body["message_ids"]}));
        } else {
            responses.push(json!({"success": false, "errors": body["errors"]}));
        }
    }
    let answer = Answer::json(
        200,
        json!({"success": true, "responses": responses, "errors": []}),
    );
    // A sandbox inbox (`/api/batch/{inbox_id}`) keeps the mail: nobody
    // gets it.
    let sandbox = incoming.path.trim_matches('/').split('/').count() == 3;
    let answer = delivered(answer, &ids);
    if sandbox {
        answer.delivering(0)
    } else {
        answer
    }
}

/// A Mailtrap batch answer listing only its first `answered` responses
/// (the emails were all accepted and are delivered all the same).
pub fn cut_short(mut answer: Answer, answered: usize) -> Answer {
    if let Some(responses) = answer
        .body
        .as_mut()
        .and_then(|b| b["responses"].as_array_mut())
    {
        responses.truncate(answered);
    }
    answer
}

pub fn resend(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    let invalid = |message: &str| {
        Answer::json(
            422,
            json!({"statusCode": 422, "name": "validation_error", "message": message}),
        )
    };
    let Some(items) = body.as_array() else {
        return invalid("The batch must be an array of emails.");
    };
    if items.is_empty() || items.len() > 100 {
        return invalid("The batch must contain between 1 and 100 emails.");
    }
    let permissive = match incoming.header("x-batch-validation") {
        None | Some("strict") => false,
        Some("permissive") => true,
        Some(_) => return invalid("x-batch-validation must be strict or permissive."),
    };
    let mut data = Vec::new();
    let mut errors = Vec::new();
    let mut count = 0;
    for (index, item) in items.iter().enumerate() {
        let answer = resend::handle(config, incoming, item);
        match answer.status {
            200 => {
                count += answer.count;
                data.push(json!({"id": answer.id.clone().unwrap_or_default()}));
            }
            401 | 403 => return answer,
            _ if !permissive => return answer,
            _ => {
                let message = answer
                    .body
                    .as_ref()
                    .map_or(Value::Null, |b| b["message"].clone());
                errors.push(json!({"index": index, "message": message}));
            }
        }
    }
    let ids: Vec<String> = data
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    let mut body = json!({"data": data});
    if permissive {
        body["errors"] = Value::from(errors);
    }
    // Emails to Resend's test addresses deliver nothing.
    delivered(Answer::json(200, body), &ids).delivering(count)
}

/// Postmark's and Mailtrap's documented batch payload limit.
const BATCH_BYTES: usize = 50 * 1000 * 1000;

pub fn postmark(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    if incoming.raw.len() > BATCH_BYTES {
        // Postmark answers a request past its size limit with 404.
        return Answer::text(404, "Request Too Large");
    }
    let templated = incoming.path.ends_with("batchWithTemplates");
    let items = if templated {
        body.get("Messages").and_then(Value::as_array)
    } else {
        body.as_array()
    };
    let Some(items) = items else {
        let shape = if templated {
            "an object with Messages"
        } else {
            "an array"
        };
        return Answer::json(
            422,
            json!({"ErrorCode": 402, "Message": format!("Invalid JSON: the batch must be {shape}.")}),
        );
    };
    if items.len() > 500 {
        return Answer::json(
            422,
            json!({"ErrorCode": 410, "Message": "Too many batch messages: at most 500."}),
        );
    }
    let single = Incoming {
        method: incoming.method,
        path: if templated {
            "/email/withTemplate"
        } else {
            "/email"
        },
        headers: incoming.headers,
        raw: incoming.raw,
    };
    let mut results = Vec::new();
    let mut ids = Vec::new();
    let mut count = 0;
    for item in items {
        let answer = postmark::handle(config, &single, item);
        if answer.status == 401 || answer.status == 406 {
            return answer;
        }
        let body = answer.body.unwrap_or_default();
        if let Some(id) = answer.id {
            ids.push(id);
            count += answer.count;
        }
        results.push(body);
    }
    // The test token's batch delivers nothing.
    delivered(Answer::json(200, Value::from(results)), &ids).delivering(count)
}
