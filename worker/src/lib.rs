//! Beacon's worker: polls the queue, moves batches into `events`, and never loses or
//! doubles an event, however often it is killed or however many run at once.
//!
//! - [`run`] is the loop; the `beacon-worker` binary and the single-process server both
//!   call it, with settings from `beacon-config`.
//! - [`process_batch`] is one claim-and-move, the unit the loop repeats.
//! - [`housekeeping`] runs beside it: retention, erasures, old salts.
//!
//! The safety comes from the store: claims with leases hand each batch to one worker, and
//! a batch moves in one transaction keyed by event id (see `beacon-store`).

pub mod housekeeping;

use std::future::Future;
use std::time::Duration;

use beacon_config::WorkerConfig;
use beacon_store::{Store, StoreError};

/// Longest pause between retries while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// Events claimed.
    pub claimed: usize,
    /// Events newly stored.
    pub inserted: usize,
    /// Events that were already stored (a retry or a crashed worker's batch).
    pub duplicates: usize,
    /// Events the database refused for good, now in `dead_letters`.
    pub dead_lettered: usize,
    /// Whether ready events were left behind, so the next claim should come at once.
    pub more_waiting: bool,
}

/// Claims up to `batch_size` events and moves them. Failures are counted in
/// `beacon_store_errors_total` (and a failed move in `beacon_worker_batches_total`).
pub async fn process_batch(store: &Store, batch_size: usize) -> Result<BatchReport, StoreError> {
    let batch = store
        .claim(batch_size)
        .await
        .inspect_err(|e| beacon_telemetry::store_error(e.kind()))?;
    if batch.is_empty() {
        return Ok(BatchReport::default());
    }
    tracing::info!(events = batch.len(), "Processing batch...");
    let started = std::time::Instant::now();
    let outcome = store.move_batch(&batch).await.inspect_err(|e| {
        beacon_telemetry::batch_failed();
        beacon_telemetry::store_error(e.kind());
    })?;
    beacon_telemetry::batch_moved(
        outcome.inserted,
        outcome.duplicates,
        outcome.dead_lettered,
        started.elapsed(),
    );
    tracing::debug!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        dead_lettered = outcome.dead_lettered,
        "batch moved"
    );
    Ok(BatchReport {
        claimed: batch.len(),
        inserted: outcome.inserted,
        duplicates: outcome.duplicates,
        dead_lettered: outcome.dead_lettered,
        more_waiting: batch.more_waiting(),
    })
}

/// Runs the worker until `shutdown` resolves. A batch in flight is finished first.
///
/// Store outages are logged and retried with backoff; the loop only ends on shutdown.
pub async fn run(config: WorkerConfig, store: Store, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    tracing::info!(
        batch_size = config.batch_size,
        poll_ms = config.poll_interval.as_millis() as u64,
        store = %store.describe(),
        "Worker running..."
    );
    let ready = wait_until_ready(&store, config.poll_interval);
    tokio::select! {
        () = ready => tracing::info!("Queue Ready"),
        () = &mut shutdown => return,
    }
    let mut backoff = config.poll_interval;
    // Beside the loop, not in it, so that a long retention round never delays moves.
    let sweeper = tokio::spawn(housekeeping::every_minute(store.clone(), config.retention));
    loop {
        let polled = tokio::time::Instant::now();
        let next_poll = match process_batch(&store, config.batch_size).await {
            // Ready events were left behind: go again at once.
            Ok(report) if report.more_waiting => polled,
            // Polls start POLL_MS apart, however long the move took, so that an event
            // waits at most that long to be picked up.
            Ok(_) => {
                backoff = config.poll_interval;
                polled + config.poll_interval
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "batch failed");
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::time::Instant::now() + pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = &mut shutdown => break,
        }
    }
    sweeper.abort();
    tracing::info!("worker stopped");
}

/// Retries [`Store::ensure_ready`] (index creation) until it succeeds.
pub async fn wait_until_ready(store: &Store, first_pause: Duration) {
    let mut pause = first_pause;
    loop {
        match store.ensure_ready().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "store not ready");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}
