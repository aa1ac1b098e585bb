//! `POST /events`: many events in one request, with a result for each.
//!
//! One bad event must neither sink the batch nor make the SDK resend the good ones, so
//! the server answers per event, in the order sent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::MAX_BATCH_EVENTS;
use crate::{Event, ValidationError};

/// What became of one event in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Durably queued (or already queued earlier under the same `event_id`).
    Accepted,
    /// Refused; resending it will not help.
    Rejected,
}

/// The result for one event, at the same index as the event in the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// Accepted or rejected.
    pub status: EventStatus,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `POST /events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Events accepted.
    pub accepted: usize,
    /// Events rejected.
    pub rejected: usize,
    /// One result per event, in request order.
    pub results: Vec<EventResult>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Envelope {
    List(Vec<Value>),
    Object {
        events: Vec<Value>,
        #[serde(default)]
        cookieless: bool,
    },
}

/// A batch as read by the server.
#[derive(Debug)]
pub struct ParsedBatch {
    /// Each event, or why it was refused, in request order.
    pub events: Vec<Result<Event, ValidationError>>,
    /// `"cookieless": true`: the sender keeps no id on the visitor's device, so the
    /// server derives an anonymous daily user for events that carry no `user_id`.
    pub cookieless: bool,
}

/// Reads a batch body: a JSON array, or `{"events":[…], "cookieless"?: bool}`. The outer
/// shape must be right; each event is then parsed on its own so that one bad event is
/// reported alone.
pub fn parse_batch(bytes: &[u8]) -> Result<ParsedBatch, ValidationError> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof => {
                ValidationError::Malformed(format!("malformed JSON: {e}"))
            }
            _ => ValidationError::Malformed(
                "a batch is a JSON array of events or an object {\"events\": [...]}".to_owned(),
            ),
        }
    })?;
    let (values, cookieless) = match envelope {
        Envelope::List(v) => (v, false),
        Envelope::Object { events, cookieless } => (events, cookieless),
    };
    if values.len() > MAX_BATCH_EVENTS {
        return Err(ValidationError::Malformed(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events, this one has {}",
            values.len()
        )));
    }
    let events = values
        .into_iter()
        .map(|v| {
            serde_json::from_value::<Event>(v)
                .map_err(|e| ValidationError::Malformed(crate::event::describe_json_error(&e)))
        })
        .collect();
    Ok(ParsedBatch { events, cookieless })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_envelopes_parse_and_bad_events_stand_alone() {
        let list = parse_batch(br#"[{"site_id":"s","event_type":"a"},{"site_id":1}]"#).unwrap();
        assert!(list.events[0].is_ok());
        assert!(list.events[1].is_err());
        assert!(!list.cookieless);
        let obj = parse_batch(br#"{"events":[{"site_id":"s","event_type":"a"}]}"#).unwrap();
        assert_eq!(obj.events.len(), 1);
        let anon = parse_batch(br#"{"events":[],"cookieless":true}"#).unwrap();
        assert!(anon.cookieless);
    }

    #[test]
    fn wrong_outer_shape_is_refused() {
        assert!(parse_batch(br#"{"site_id":"s"}"#).is_err());
        assert!(parse_batch(b"[").is_err());
        assert!(parse_batch(br#"{"events":[],"cookieless":"yes"}"#).is_err());
    }
}
