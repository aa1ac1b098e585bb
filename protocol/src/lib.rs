//! The wire contract shared by Beacon's server, worker, store and both SDKs.
//!
//! - [`event`]: the [`Event`] a client sends, and its validation.
//! - [`rules`]: the rules an event's fields must meet.
//! - [`batch`]: the `POST /events` envelope and its per-event results.
//! - [`stats`]: the `GET /stats` query and the [`Stats`] it answers.
//! - [`query`]: the query API (`POST /api/v2/query`), in Plausible's shape.
//! - [`limits`]: the size limits both sides agree on.
//! - [`time`]: timestamps as they travel (RFC 3339 or epoch milliseconds) and date bounds.
//!
//! The crate does no I/O and has no runtime, so that it builds for
//! `wasm32-unknown-unknown` and the browser SDK validates exactly as the server does.
//! Without the `std` feature only `limits` and `rules` are built, without the standard
//! library: the browser SDK leaves std's panic and formatting code out of its module.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod limits;
pub mod rules;

#[cfg(feature = "std")]
mod answers;
#[cfg(feature = "std")]
pub mod batch;
#[cfg(feature = "std")]
pub mod event;
#[cfg(feature = "std")]
pub mod query;
#[cfg(feature = "std")]
pub mod stats;
#[cfg(feature = "std")]
pub mod time;

#[cfg(feature = "std")]
pub use answers::{ErrorBody, Queued};
#[cfg(feature = "std")]
pub use batch::{BatchResponse, EventResult, EventStatus};
#[cfg(feature = "std")]
pub use event::Event;
pub use rules::ValidationError;
#[cfg(feature = "std")]
pub use stats::{PathCount, Stats, StatsQuery, TimeRange};
#[cfg(feature = "std")]
pub use time::DateBound;
