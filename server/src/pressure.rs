//! Backpressure: the queue's depth, kept fresh in the background, so that ingest can
//! refuse work above the high-water mark (`QUEUE_MAX_EVENTS`) without asking the store
//! on every request. Above the mark, ingest answers `503` with `Retry-After` until the
//! worker has drained the queue below it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use beacon_store::Store;

/// How often the depth is read from the store.
const REFRESH: Duration = Duration::from_millis(250);

/// The queue's depth as last seen, and the mark.
#[derive(Debug)]
pub struct Pressure {
    depth: AtomicU64,
    max: u64,
}

impl Pressure {
    /// Starts reading `store`'s depth every quarter second, for as long as the
    /// returned handle lives.
    pub fn start(store: Store, max: u64) -> Arc<Self> {
        let pressure = Arc::new(Self {
            depth: AtomicU64::new(0),
            max,
        });
        tokio::spawn(refresh(store, Arc::downgrade(&pressure)));
        pressure
    }

    /// Whether the queue is above the high-water mark.
    pub fn over(&self) -> bool {
        self.depth.load(Ordering::Relaxed) >= self.max
    }

    /// Counts events just queued, until the next reading replaces the figure.
    pub fn queued(&self, events: usize) {
        self.depth.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// The high-water mark.
    pub fn max(&self) -> u64 {
        self.max
    }
}

async fn refresh(store: Store, pressure: Weak<Pressure>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pressure) = pressure.upgrade() else {
            return; // the server is gone
        };
        // While the store is unreachable, ingest fails on its own; keep the last figure.
        if let Ok(status) = store.queue_status().await {
            pressure.depth.store(status.depth, Ordering::Relaxed);
        }
    }
}
