//! The wire contract shared by Beacon's server, worker, store and both SDKs.
//!
//! - [`event`]: the [`Event`] a client sends, and its validation.
//! - [`batch`]: the `POST /events` envelope and its per-event results.
//! - [`stats`]: the `GET /stats` query and the [`Stats`] it answers.
//! - [`query`]: the query API (`POST /api/v2/query`), in Plausible's shape.
//! - [`limits`]: the size limits both sides agree on.
//! - [`time`]: timestamps as they travel (RFC 3339 or epoch milliseconds) and date bounds.
//!
//! The crate does no I/O and has no runtime, so that it builds for
//! `wasm32-unknown-unknown` and the browser SDK validates exactly as the server does.

pub mod batch;
pub mod event;
pub mod limits;
pub mod query;
pub mod stats;
pub mod time;

pub use batch::{BatchResponse, EventResult, EventStatus};
pub use event::{Event, ValidationError};
pub use stats::{PathCount, Stats, StatsQuery, TimeRange};
pub use time::DateBound;

/// The body of every error answer, so that clients can show or log one field.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `invalid_event` or `payload_too_large`.
    pub error: String,
    /// What was wrong, for a human.
    pub message: String,
}

/// The answer to a single accepted `POST /event`: `{"status":"queued"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Queued {
    /// Always `"queued"`.
    pub status: String,
}

impl Queued {
    /// `{"status":"queued"}`.
    pub fn new() -> Self {
        Self {
            status: "queued".to_owned(),
        }
    }
}

impl Default for Queued {
    fn default() -> Self {
        Self::new()
    }
}
