//! `POST /events`: many events in one request, with a result for each.
//!
//! One bad event must neither sink the batch nor make the SDK resend the good ones, so
//! the server answers per event, in the order sent.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::limits::MAX_BATCH_EVENTS;
use crate::{Event, ValidationError};

/// What became of one event in a batch.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Durably queued (or already queued earlier under the same `event_id`).
    Accepted,
    /// Refused; resending it will not help.
    Rejected,
}

/// The result for one event, at the same index as the event in the request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// Accepted or rejected.
    pub status: EventStatus,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `POST /events`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Events accepted.
    pub accepted: usize,
    /// Events rejected.
    pub rejected: usize,
    /// One result per event, in request order.
    pub results: Vec<EventResult>,
}

/// `{"events": [...], "cookieless"?: bool}`. Events stay raw until each is parsed alone.
#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default)]
    cookieless: bool,
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
/// shape must be right; each event is then parsed on its own, straight from its slice of
/// the body, so that one bad event is reported alone.
pub fn parse_batch(bytes: &[u8]) -> Result<ParsedBatch, ValidationError> {
    let shape_error = |e: serde_json::Error| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof => {
                ValidationError::Malformed(format!("malformed JSON: {e}"))
            }
            _ => ValidationError::Malformed(
                "a batch is a JSON array of events or an object {\"events\": [...]}".to_owned(),
            ),
        }
    };
    let (raw, cookieless) = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let wrapped: Wrapped<'_> = serde_json::from_slice(bytes).map_err(shape_error)?;
            (wrapped.events, wrapped.cookieless)
        }
        // An array, or anything else, which then fails as one.
        _ => (
            serde_json::from_slice::<Vec<&RawValue>>(bytes).map_err(shape_error)?,
            false,
        ),
    };
    if raw.len() > MAX_BATCH_EVENTS {
        return Err(ValidationError::Malformed(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events, this one has {}",
            raw.len()
        )));
    }
    let events = raw
        .into_iter()
        .map(|r| {
            serde_json::from_str::<Event>(r.get())
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
        assert!(parse_batch(br#""events""#).is_err());
        assert!(parse_batch(b"").is_err());
    }

    #[test]
    fn events_keep_their_props_and_whitespace_does_not_matter() {
        let batch = parse_batch(
            b" \n [ {\"site_id\":\"s\",\"event_type\":\"a\",\"props\":{\"n\":[1,{\"x\":null}]}} ]",
        )
        .unwrap();
        let event = batch.events[0].as_ref().unwrap();
        assert_eq!(
            event.props.as_ref().unwrap()["n"],
            serde_json::json!([1, {"x": null}])
        );
    }
}
