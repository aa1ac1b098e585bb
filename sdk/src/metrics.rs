//! What the client has done with the events it was given: counters the sender bumps,
//! and the snapshot [`Client::metrics`](crate::Client::metrics) returns.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the client has done with the events it was given. Counters only grow.
///
/// ```no_run
/// # fn demo(client: &beacon::Client) {
/// let m = client.metrics();
/// if m.dropped_overflow > 0 {
///     eprintln!("analytics buffer overflowed {} times: raise queue_capacity", m.dropped_overflow);
/// }
/// # }
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Events acknowledged by the server.
    pub delivered: u64,
    /// Oldest events dropped because the buffer was full.
    pub dropped_overflow: u64,
    /// Events given up on after the retry limit, or refused by the server as a whole.
    pub dropped_undeliverable: u64,
    /// Events the server rejected one by one (invalid); resending would not help.
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub delivered: AtomicU64,
    pub dropped_overflow: AtomicU64,
    pub dropped_undeliverable: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> Metrics {
        Metrics {
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped_overflow: self.dropped_overflow.load(Ordering::Relaxed),
            dropped_undeliverable: self.dropped_undeliverable.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}
