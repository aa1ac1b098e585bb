//! The event a client sends, and the rules it must meet before the server queues it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::limits::*;
pub use crate::rules::{ValidationError, validate_context, validate_fields, validate_props_size};

/// One analytics event, as it travels from an SDK (or `curl`) to the server.
///
/// Only `site_id` and `event_type` are required, so that the README's first curl works and custom
/// events need not invent a path. `event_id` makes retries safe: the server stores an id
/// once, however often it is sent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The website or app the event belongs to.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub site_id: String,
    /// `page_view`, `click`, or any custom name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub event_type: String,
    /// The URL path the event happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Who did it; anonymous events leave it out and are not counted as users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When it happened on the client; the server's clock when absent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::flexible"
    )]
    pub timestamp: Option<DateTime<Utc>>,
    /// A client-made id (UUIDv7 from the SDKs) that deduplicates retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Free-form properties, kept with the event.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Map<String, Value>>,
    /// Where the visitor came from: the page before (the snippet sends
    /// `document.referrer` when it is another site). A URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// The visitor's user agent, for server-side senders that pass on their visitor's;
    /// otherwise the request's `User-Agent` counts. Parsed, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The host the page is on (`location.hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Campaign tags, as in the page URL's `utm_*` parameters. Inline rather than
    /// `#[serde(flatten)]`, which would make serde buffer every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    /// `utm_medium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_medium: Option<String>,
    /// `utm_campaign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_campaign: Option<String>,
    /// `utm_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_content: Option<String>,
    /// `utm_term`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_term: Option<String>,
}

impl Event {
    /// An event of `event_type` for `site_id`, with nothing else set.
    pub fn new(site_id: impl Into<String>, event_type: impl Into<String>) -> Self {
        Self {
            site_id: site_id.into(),
            event_type: event_type.into(),
            path: None,
            user_id: None,
            timestamp: None,
            event_id: None,
            props: None,
            referrer: None,
            user_agent: None,
            hostname: None,
            utm_source: None,
            utm_medium: None,
            utm_campaign: None,
            utm_content: None,
            utm_term: None,
        }
    }

    /// The campaign tags, each with its name.
    pub fn utm(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("utm_source", self.utm_source.as_deref()),
            ("utm_medium", self.utm_medium.as_deref()),
            ("utm_campaign", self.utm_campaign.as_deref()),
            ("utm_content", self.utm_content.as_deref()),
            ("utm_term", self.utm_term.as_deref()),
        ]
    }

    /// Parses one event from JSON, turning serde's message into a [`ValidationError`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ValidationError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ValidationError::Malformed(describe_json_error(&e)))
    }

    /// Checks every limit. `now` is passed in because this crate has no clock.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ValidationError> {
        validate_fields(
            &self.site_id,
            &self.event_type,
            self.path.as_deref(),
            self.user_id.as_deref(),
        )?;
        if let Some(props) = &self.props {
            let bytes = serde_json::to_vec(props)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            validate_props_size(props.len(), bytes)?;
        }
        if let Some(ts) = self.timestamp {
            if ts > now + TimeDelta::seconds(MAX_CLOCK_SKEW_SECS) {
                return Err(ValidationError::TimestampInFuture);
            }
        }
        validate_context(
            self.referrer.as_deref(),
            self.user_agent.as_deref(),
            self.hostname.as_deref(),
            self.utm(),
        )
    }
}

/// serde_json's messages name the problem and position; prefix them so the reader knows
/// it was the JSON that was wrong.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("malformed JSON: {e}"),
        Category::Data | Category::Io => format!("invalid event: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn the_seed_example_parses_and_validates() {
        let e = Event::from_json(
            br#"{"site_id":"site-001","event_type":"page_view","path":"/home","user_id":"user123"}"#,
        )
        .unwrap();
        assert_eq!(e.path.as_deref(), Some("/home"));
        e.validate(now()).unwrap();
    }

    #[test]
    fn missing_site_id_is_named() {
        let err = Event::from_json(br#"{"event_type":"page_view"}"#).unwrap_err();
        assert!(err.to_string().contains("site_id"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Event::from_json(br#"{"site_id":5,"event_type":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn over_long_path_is_refused() {
        let mut e = Event::new("s", "page_view");
        e.path = Some("/".repeat(MAX_PATH_BYTES + 1));
        assert!(matches!(
            e.validate(now()),
            Err(ValidationError::TooLong { field: "path", .. })
        ));
    }

    #[test]
    fn empty_site_id_is_refused() {
        let e = Event::new(" ", "page_view");
        assert_eq!(e.validate(now()), Err(ValidationError::Empty("site_id")));
    }

    #[test]
    fn timestamps_accept_rfc3339_and_millis_and_refuse_the_far_future() {
        let e = Event::from_json(br#"{"site_id":"s","event_type":"t","timestamp":1764072000000}"#)
            .unwrap();
        assert_eq!(
            e.timestamp.unwrap().to_rfc3339(),
            "2025-11-25T12:00:00+00:00"
        );
        let e = Event::from_json(
            br#"{"site_id":"s","event_type":"t","timestamp":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.validate(now()), Err(ValidationError::TimestampInFuture));
        let err = Event::from_json(br#"{"site_id":"s","event_type":"t","timestamp":"soon"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn too_many_props_are_refused() {
        let mut e = Event::new("s", "t");
        let props = (0..=MAX_PROPS)
            .map(|i| (i.to_string(), Value::from(i)))
            .collect();
        e.props = Some(props);
        assert_eq!(e.validate(now()), Err(ValidationError::PropsTooLarge));
    }
}
