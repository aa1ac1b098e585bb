//! Housekeeping beside the polling loop, once a minute: raw events past the retention
//! window (`RETENTION_DAYS`) are deleted in small batches, erasures in progress are
//! finished, visit states of visitors gone for two days and cookieless salts of
//! finished days are forgotten.

use std::time::Duration;

use beacon_store::{Store, StoreError};
use chrono::Utc;

/// How often housekeeping runs.
const EVERY: Duration = Duration::from_secs(60);
/// Raw events deleted per store call: small, so that moves are never held up long.
const EXPIRE_BATCH: usize = 1000;
/// The pause between two batches, which lets moves and enqueues in.
const EXPIRE_PAUSE: Duration = Duration::from_millis(10);
/// How long one round deletes before it leaves the rest to the next.
const EXPIRE_BUDGET: Duration = Duration::from_secs(5);
/// How long a visitor's visit state outlives their last event: well past the longest
/// visit, so that only visitors long gone lose it.
const VISIT_STATES_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// One round: answers how many raw events it deleted.
pub async fn sweep(store: &Store, retention: Option<Duration>) -> Result<u64, StoreError> {
    let mut expired = 0;
    if let Some(retention) = retention {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        let started = std::time::Instant::now();
        loop {
            let deleted = store.expire_events(cutoff, EXPIRE_BATCH).await?;
            expired += deleted;
            if deleted < EXPIRE_BATCH as u64 || started.elapsed() > EXPIRE_BUDGET {
                break;
            }
            tokio::time::sleep(EXPIRE_PAUSE).await;
        }
        if expired > 0 {
            tracing::info!(expired, "deleted raw events past the retention window");
        }
    }
    store.settle_erasures().await?;
    let forgotten = store.forget_visits(Utc::now() - VISIT_STATES_KEPT).await?;
    if forgotten > 0 {
        tracing::debug!(forgotten, "forgot the visit states of visitors long gone");
    }
    // A salt is needed for its day and, for visits across midnight, the next.
    let yesterday = Utc::now().date_naive().pred_opt().unwrap_or_default();
    store.forget_salts(yesterday).await?;
    Ok(expired)
}

/// Sweeps now and then every minute, for as long as it is polled.
pub async fn every_minute(store: Store, retention: Option<Duration>) {
    loop {
        if let Err(e) = sweep(&store, retention).await {
            tracing::warn!(error = %e, "housekeeping failed; trying again in a minute");
        }
        tokio::time::sleep(EVERY).await;
    }
}
