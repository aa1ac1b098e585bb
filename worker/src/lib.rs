//! Beacon's worker: polls the queue, moves batches into `events`, and never loses or
//! doubles an event, however often it is killed or however many run at once.
//!
//! - [`run`] is the loop; the `beacon-worker` binary and the single-process server both
//!   call it, with settings from `beacon-config`. Each pass claims a batch and moves it;
//!   with a backlog, it claims the next batch while moving one.
//! - [`housekeeping`] runs beside it: retention, erasures, old salts.
//!
//! The safety comes from the store: claims with leases hand each batch to one worker, and
//! a batch moves in one transaction keyed by event id (see `beacon-store`).

pub mod housekeeping;

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use beacon_config::WorkerConfig;
use beacon_store::{ClaimedBatch, Store, StoreError};

/// Longest pause between retries while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Claims up to `batch_size` events. A failure is counted in `beacon_store_errors_total`.
async fn claim(store: &Store, batch_size: usize) -> Result<ClaimedBatch, StoreError> {
    store
        .claim(batch_size)
        .await
        .inspect_err(|e| beacon_telemetry::store_error(e.kind()))
}

/// Moves a claimed batch. A failure is counted in `beacon_store_errors_total` and
/// `beacon_worker_batches_total`.
async fn move_claimed(store: &Store, batch: &ClaimedBatch) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    tracing::info!(events = batch.len(), "Processing batch...");
    let started = std::time::Instant::now();
    let outcome = store.move_batch(batch).await.inspect_err(|e| {
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
    Ok(())
}

/// Moves `batch`; when more events wait behind it and `ahead` allows, claims the next
/// batch meanwhile and answers it too. The claim reads the queue while the move writes
/// the events store, so with a backlog the two overlap instead of taking turns. Moves
/// still happen one at a time and in the order of their claims.
async fn move_and_claim_next(
    store: &Store,
    batch: &ClaimedBatch,
    batch_size: usize,
    ahead: bool,
) -> (Result<(), StoreError>, Option<ClaimedBatch>) {
    if !(ahead && batch.more_waiting()) {
        return (move_claimed(store, batch).await, None);
    }
    let (moved, next) = tokio::join!(move_claimed(store, batch), claim(store, batch_size));
    // A failed claim is counted, and the next poll claims again.
    (moved, next.ok().filter(|next| !next.is_empty()))
}

/// Runs the worker until `shutdown` resolves. A batch in flight is finished first, and
/// so is one claimed ahead of it.
///
/// Store outages are logged and retried with backoff; the loop only ends on shutdown.
/// A batch whose move failed because the store was away is moved again after the pause,
/// while its lease runs (a move is idempotent), rather than left to wait out its lease.
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
    // Batches claimed and not yet moved, in the order of their claims: one claimed
    // ahead, or one whose move failed (and then perhaps one claimed ahead of it).
    let mut held: VecDeque<ClaimedBatch> = VecDeque::new();
    loop {
        let polled = tokio::time::Instant::now();
        let batch = match held.pop_front() {
            Some(batch) => Ok(batch),
            None => claim(&store, config.batch_size).await,
        };
        // Whether this pass found events (see `next_poll`).
        let found = batch.as_ref().is_ok_and(|batch| !batch.is_empty());
        let moved = match batch {
            Ok(batch) => {
                let ahead = held.is_empty();
                let (moved, next) =
                    move_and_claim_next(&store, &batch, config.batch_size, ahead).await;
                // Only when the store was away: a batch that fails for good waits out
                // its lease, so that the batches behind it still move.
                let retry = moved.as_ref().is_err_and(StoreError::is_unavailable);
                if retry && batch.lease_running() {
                    held.push_front(batch);
                }
                held.extend(next);
                moved
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &moved {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "batch failed");
        }
        let next_poll = next_poll(&moved, found, polled, config.poll_interval, &mut backoff);
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = &mut shutdown => break,
        }
    }
    for batch in held {
        if let Err(e) = move_claimed(&store, &batch).await {
            tracing::warn!(error = %e, "a batch in hand was not moved: its lease will hand it on");
        }
    }
    sweeper.abort();
    tracing::info!("worker stopped");
}

/// When the next pass starts, after one that started at `polled`, found events or not,
/// and ended with `moved`. After events were found, at once: more were left behind, or
/// may have come while the ones found moved. Passes that find the queue empty start
/// `poll_interval` apart, however long the move took, so that an event waits at most
/// that long to be picked up. A failure waits `backoff`, which doubles up to
/// [`MAX_BACKOFF`] until a pass succeeds.
fn next_poll(
    moved: &Result<(), StoreError>,
    found: bool,
    polled: tokio::time::Instant,
    poll_interval: Duration,
    backoff: &mut Duration,
) -> tokio::time::Instant {
    match moved {
        Ok(()) => {
            *backoff = poll_interval;
            if found {
                polled
            } else {
                polled + poll_interval
            }
        }
        Err(_) => {
            let pause = *backoff;
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            tokio::time::Instant::now() + pause
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_millis(200);

    #[test]
    fn a_pass_that_found_events_is_followed_at_once() {
        let polled = tokio::time::Instant::now();
        let mut backoff = POLL;
        // More were left behind, or may have come while the batch moved.
        assert_eq!(next_poll(&Ok(()), true, polled, POLL, &mut backoff), polled);
        // An empty queue is polled again a poll interval after the last poll began.
        assert_eq!(
            next_poll(&Ok(()), false, polled, POLL, &mut backoff),
            polled + POLL
        );
    }

    #[test]
    fn failures_back_off_until_a_pass_succeeds() {
        let polled = tokio::time::Instant::now();
        let mut backoff = POLL;
        let failed = Err(StoreError::Unavailable("down".to_owned()));
        for _ in 0..10 {
            let next = next_poll(&failed, true, polled, POLL, &mut backoff);
            assert!(next > polled);
        }
        assert_eq!(backoff, MAX_BACKOFF);
        next_poll(&Ok(()), false, polled, POLL, &mut backoff);
        assert_eq!(backoff, POLL);
    }
}
