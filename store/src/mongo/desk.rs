//! Spare batches for MongoDB's group commits, recorded ahead of need, so that a group
//! commit does not wait for a batch to be recorded first.
//!
//! A batch is recorded held by this process's writer (owner `enqueuer`) under a lease,
//! before any event joins it. A spare is handed out only while young (under half its
//! lease), so its lease cannot run out while events are written into it. The writer
//! releases a batch once its events are in, before it answers; a batch whose lease runs
//! out unreleased (its writer died, or its write failed) was never acknowledged, and the
//! worker that finds it discards its events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::sync::Notify;

use super::claim::lease_end;
use crate::new_claim_token;

/// The owner of a batch whose events are still being written.
pub(super) const ENQUEUER: &str = "enqueuer";
/// Spares kept ready.
const SPARES: usize = 4;

/// Shared by every clone of one store.
#[derive(Debug)]
pub(super) struct BatchDesk {
    batches: Collection<Document>,
    lease: Duration,
    state: Mutex<DeskState>,
    work: Notify,
}

#[derive(Debug, Default)]
struct DeskState {
    spares: Vec<(String, Instant)>,
    running: bool,
    /// The batch handed out last: none older is handed out after it.
    last: String,
}

impl BatchDesk {
    pub(super) fn new(batches: Collection<Document>, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            batches,
            lease,
            state: Mutex::default(),
            work: Notify::new(),
        })
    }

    /// A young spare batch, if one is ready; else a new id for [`Self::record`], made
    /// before the desk records more, so that it sorts before them and claims keep to
    /// arrival order. The desk records more behind either.
    pub(super) fn spare(self: &Arc<Self>) -> Result<String, String> {
        let mut state = crate::lock(&self.state);
        let young = self.lease / 2;
        // Claims take batches in id order, so batches are handed out in id order too:
        // the oldest spare first, and none older than one handed out already (spares
        // recorded while the writer recorded its own). Those and spares too old are
        // dropped here; in the database their leases run out, and the first worker to
        // take one over finds it empty and deletes it.
        let last = std::mem::take(&mut state.last);
        state
            .spares
            .retain(|(batch, recorded)| recorded.elapsed() < young && *batch > last);
        let spare = if state.spares.is_empty() {
            Err(new_claim_token())
        } else {
            Ok(state.spares.remove(0).0)
        };
        state.last = match &spare {
            Ok(batch) | Err(batch) => batch.clone(),
        };
        if !state.running {
            state.running = true;
            tokio::spawn(Arc::clone(self).serve());
        }
        self.work.notify_one();
        spare
    }

    /// Records `batch`, held, now (when no spare is ready).
    pub(super) async fn record(&self, batch: String) -> mongodb::error::Result<String> {
        self.batches.insert_one(held(&batch, self.lease)).await?;
        Ok(batch)
    }

    /// Tops the spares up whenever one is taken.
    async fn serve(self: Arc<Self>) {
        loop {
            self.work.notified().await;
            let missing = SPARES.saturating_sub(crate::lock(&self.state).spares.len());
            if missing == 0 {
                continue;
            }
            let recorded = Instant::now(); // before the lease is written, so never later
            let ids: Vec<String> = (0..missing).map(|_| new_claim_token()).collect();
            let docs = ids.iter().map(|batch| held(batch, self.lease));
            match self.batches.insert_many(docs).await {
                Ok(_) => crate::lock(&self.state)
                    .spares
                    .extend(ids.into_iter().map(|batch| (batch, recorded))),
                // The writer records its own until the database takes spares again.
                Err(e) => tracing::debug!(error = %e, "cannot record spare batches"),
            }
        }
    }
}

/// A batch held by this process's writer until `lease` from now.
fn held(batch: &str, lease: Duration) -> Document {
    doc! { "_id": batch, "owner": ENQUEUER, "until": lease_end(lease) }
}
