//! Beacon's Prometheus metrics, in one place for both binaries.
//!
//! - [`install`] sets up the process's recorder (once, however often it is called),
//!   with every metric described and histogram buckets fit for request and move times.
//! - `record` names every metric and is the only place that records them: handlers and
//!   the worker call its functions, so a name or label is spelt once.
//! - [`TrackHttpLayer`] counts and times requests, by route and status.
//! - [`router`] serves `GET /metrics` (behind `METRICS_TOKEN` when set), reading the
//!   queue's figures from the store at scrape time; [`serve`] runs it on a port of its
//!   own (`METRICS_PORT`).
//!
//! Every label takes values from a fixed set (routes as the router declares them, never
//! the path asked for), so that no client can grow the metrics without bound.

mod endpoint;
mod http;
mod record;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use endpoint::{router, serve};
pub use http::TrackHttpLayer;
pub use record::*;

/// How often histogram samples are folded into their buckets, so that memory stays
/// flat however long nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Bucket bounds of the time histograms, in seconds: a fast ingest answer to a slow move.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first call. Needs a Tokio runtime (for upkeep).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS);
            // The bounds are a constant, non-empty list: set_buckets cannot fail on it.
            let builder = builder.unwrap_or_else(|e| unreachable!("{e}"));
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                // Another recorder came first (an embedding program's): ours then only
                // renders what it holds, which is nothing.
                tracing::warn!(error = %e, "a metrics recorder was already installed");
            }
            record::describe();
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UPKEEP_EVERY).await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}
