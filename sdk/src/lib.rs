//! Beacon's Rust client. Call it from hot paths: tracking never blocks, never fails and
//! never panics; a background task batches events to the server and retries for you.
//!
//! ```no_run
//! # async fn demo() -> Result<(), beacon::Error> {
//! let client = beacon::Client::builder("http://localhost:1000").site_id("site-001").build()?;
//! client.page_view("/home");
//! client.track(beacon::event("signup").user("user123").prop("plan", "pro"));
//! client.shutdown().await; // sends what is buffered
//! # Ok(()) }
//! ```
//!
//! How it fits together:
//! - [`Client`] puts each event, with a UUIDv7 `event_id`, into a bounded buffer; when it
//!   is full the oldest event is dropped and counted ([`Client::dropped`]).
//! - The sender (one tokio task, or a thread of its own outside a runtime) sends batches
//!   to `POST /events` every flush interval, whenever a batch fills, and on
//!   [`Client::flush`]. It gzips them, retries network errors, 408, 429 and 5xx with
//!   full-jitter backoff (honouring `Retry-After`), splits a batch the server finds too
//!   large, and drops what the server refuses, with a log line and a count.
//! - The `event_id` makes retries safe: the server stores each id once.
//! - [`Client::stats`] reads `GET /stats` into the protocol's typed [`Stats`];
//!   [`Client::query`] asks the query API, built with [`query()`] ([`mod@query`]).

mod builder;
mod client;
mod error;
mod event;
mod metrics;
pub mod query;
mod sender;

pub use beacon_protocol::{DateBound, PathCount, Stats, StatsQuery};
pub use builder::ClientBuilder;
pub use client::Client;
pub use error::Error;
pub use event::{Track, event};
pub use metrics::Metrics;
pub use query::query;
