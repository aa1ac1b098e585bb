//! Held batches for MongoDB's group commits, recorded ahead of need and released after
//! the answer, so that a group commit waits for one round trip (its `insert_many`)
//! rather than three.
//!
//! A batch is recorded held by this process's writers under a lease, before any event
//! joins it, so a writer that dies leaves a lease behind and never orphaned events. A
//! spare is handed out only while young (under half its lease), so its lease cannot run
//! out while events are written into it. Releasing makes a written batch claimable;
//! until then only its lease's end would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::sync::{Notify, watch};

use super::claim::{lease_end, released};
use super::codec::count_bson;
use crate::new_claim_token;

/// The owner of a batch whose events are still being written.
const ENQUEUER: &str = "enqueuer";

/// Spares kept ready: one per writer task, and a few over.
const SPARES: usize = 8;
/// Releases sent to the database at once.
const RELEASES_AT_ONCE: usize = 64;

/// Shared by every clone of one store.
#[derive(Debug)]
pub(super) struct BatchDesk {
    batches: Collection<Document>,
    lease: Duration,
    state: Mutex<DeskState>,
    work: Notify,
    /// How many releases (counted as submitted) have been sent, done or failed.
    settled: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct DeskState {
    spares: Vec<(String, Instant)>,
    to_release: Vec<(String, u64)>,
    submitted: u64,
    running: bool,
}

impl BatchDesk {
    pub(super) fn new(batches: Collection<Document>, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            batches,
            lease,
            state: Mutex::default(),
            work: Notify::new(),
            settled: watch::Sender::new(0),
        })
    }

    /// A young spare batch, if one is ready; the desk records more behind it.
    pub(super) fn spare(self: &Arc<Self>) -> Option<String> {
        let mut state = self.lock();
        let young = self.lease / 2;
        // Older ones are dropped here; in the database their leases run out, and the
        // first worker to take one over finds it empty and deletes it.
        state
            .spares
            .retain(|(_, recorded)| recorded.elapsed() < young);
        // The oldest first: claims take batches in id order, close to arrival order.
        let spare = (!state.spares.is_empty()).then(|| state.spares.remove(0).0);
        self.start(&mut state);
        spare
    }

    /// A new held batch, recorded now (when no spare is ready).
    pub(super) async fn record(&self) -> mongodb::error::Result<String> {
        let batch = new_claim_token();
        self.batches.insert_one(held(&batch, self.lease)).await?;
        Ok(batch)
    }

    /// Releases `batch`, whose `events` are written, soon and off the caller's path.
    pub(super) fn release(self: &Arc<Self>, batch: String, events: u64) {
        let mut state = self.lock();
        state.to_release.push((batch, events));
        state.submitted += 1;
        self.start(&mut state);
    }

    /// Returns once every batch this desk was given to release has been released (or
    /// its release failed, leaving it to its lease).
    pub(super) async fn settle(&self) {
        let submitted = self.lock().submitted;
        let mut settled = self.settled.subscribe();
        let _ = settled.wait_for(|n| *n >= submitted).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeskState> {
        crate::lock(&self.state)
    }

    /// Starts the background task on first use; wakes it otherwise.
    fn start(self: &Arc<Self>, state: &mut DeskState) {
        if !state.running {
            state.running = true;
            tokio::spawn(Arc::clone(self).serve());
        }
        self.work.notify_one();
    }

    async fn serve(self: Arc<Self>) {
        loop {
            self.work.notified().await;
            loop {
                let (releases, upto, missing) = {
                    let mut state = self.lock();
                    let take = state.to_release.len().min(RELEASES_AT_ONCE);
                    let releases: Vec<_> = state.to_release.drain(..take).collect();
                    let upto = state.submitted - state.to_release.len() as u64;
                    (releases, upto, SPARES.saturating_sub(state.spares.len()))
                };
                if releases.is_empty() && missing == 0 {
                    break;
                }
                let (_, spares) =
                    tokio::join!(self.release_now(&releases), self.record_spares(missing));
                if !releases.is_empty() {
                    self.settled.send_replace(upto);
                }
                let recorded_none = spares.is_empty();
                self.lock().spares.extend(spares);
                if releases.is_empty() && recorded_none {
                    break; // the database refuses spares: wait for the next group commit
                }
            }
        }
    }

    /// Releases `releases` in one `update` command: one statement per batch, since
    /// each records its own event count.
    async fn release_now(&self, releases: &[(String, u64)]) {
        if releases.is_empty() {
            return;
        }
        let updates: Vec<Document> = releases
            .iter()
            .map(|(batch, events)| {
                doc! {
                    "q": { "_id": batch, "owner": ENQUEUER },
                    "u": { "$set": {
                        "owner": "", "until": released(), "events": count_bson(*events),
                    } },
                }
            })
            .collect();
        let command = doc! {
            "update": self.batches.name(),
            "updates": updates,
            "ordered": false,
            "writeConcern": { "j": true },
        };
        let database = self.batches.client().database(&self.batches.namespace().db);
        if let Err(e) = database.run_command(command).await {
            tracing::warn!(error = %e, batches = releases.len(), "queued events wait for their lease to end: releasing their batches failed");
        }
    }

    async fn record_spares(&self, missing: usize) -> Vec<(String, Instant)> {
        if missing == 0 {
            return Vec::new();
        }
        let recorded = Instant::now(); // before the lease is written, so never later
        let ids: Vec<String> = (0..missing).map(|_| new_claim_token()).collect();
        let docs = ids.iter().map(|batch| held(batch, self.lease));
        match self.batches.insert_many(docs).await {
            Ok(_) => ids.into_iter().map(|batch| (batch, recorded)).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot record spare batches");
                Vec::new()
            }
        }
    }
}

/// A batch held by this process's writers until `lease` from now.
fn held(batch: &str, lease: Duration) -> Document {
    doc! { "_id": batch, "owner": ENQUEUER, "until": lease_end(lease) }
}
