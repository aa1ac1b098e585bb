//! Spare batches for MongoDB's group commits, recorded ahead of need, so that a group
//! commit does not wait for a batch to be recorded first.
//!
//! A batch is recorded held by this process's writer (owner `enqueuer`) under a lease,
//! before any event joins it. A spare is handed out only while young (under half its
//! lease), so its lease cannot run out while events are written into it. The writer
//! releases a batch once its events are in, before it answers; a batch whose lease runs
//! out unreleased (its writer died, or its write failed) was never acknowledged, and the
//! worker that finds it discards its events.
//!
//! Spares are recorded several to an insert, as many as the writer is using up: each
//! insert costs the database about as much as a group's own write, so one a group was
//! a third of the queue's work (BENCHMARKS.md, section 18). The desk aims to hold
//! `wanted` spares: it doubles when the writer finds none ready, and halves when spares
//! grow too old to hand out, so a quiet site records few that go to waste.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::sync::Notify;

use super::claim::lease_end;
use crate::new_claim_token;

/// The owner of a batch whose events are still being written.
pub(super) const ENQUEUER: &str = "enqueuer";
/// Fewest spares the desk aims to hold.
const MIN_WANTED: usize = 4;
/// Most spares the desk aims to hold: at a thousand groups a second, an insert every
/// few dozen milliseconds.
const MAX_WANTED: usize = 64;

/// Shared by every clone of one store.
#[derive(Debug)]
pub(super) struct BatchDesk {
    batches: Collection<Document>,
    lease: Duration,
    state: Mutex<DeskState>,
    work: Notify,
}

#[derive(Debug)]
struct DeskState {
    spares: Vec<(String, Instant)>,
    /// How many spares to hold (see the module doc).
    wanted: usize,
    running: bool,
    /// The batch handed out last: none older is handed out after it.
    last: String,
}

impl BatchDesk {
    pub(super) fn new(batches: Collection<Document>, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            batches,
            lease,
            state: Mutex::new(DeskState::new()),
            work: Notify::new(),
        })
    }

    /// A young spare batch, if one is ready; else a new id for [`Self::record`], made
    /// before the desk records more, so that it sorts before them and claims keep to
    /// arrival order. The desk records more behind either.
    pub(super) fn spare(self: &Arc<Self>) -> Result<String, String> {
        let mut state = crate::lock(&self.state);
        let spare = state.hand_out(self.lease / 2);
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

    /// Tops the spares up to `wanted` once half of them are taken.
    async fn serve(self: Arc<Self>) {
        loop {
            self.work.notified().await;
            let missing = crate::lock(&self.state).to_record();
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

impl DeskState {
    fn new() -> Self {
        Self {
            spares: Vec::new(),
            wanted: MIN_WANTED,
            running: false,
            last: String::new(),
        }
    }

    /// The oldest spare recorded within `young`, or a new id to record (see
    /// [`BatchDesk::spare`]); adjusts `wanted` (see the module doc).
    fn hand_out(&mut self, young: Duration) -> Result<String, String> {
        // Claims take batches in id order, so batches are handed out in id order too:
        // the oldest spare first, and none older than one handed out already (spares
        // recorded while the writer recorded its own). Those and spares too old are
        // dropped here; in the database their leases run out, and the first worker to
        // take one over finds it empty and deletes it.
        let last = std::mem::take(&mut self.last);
        let held = self.spares.len();
        self.spares
            .retain(|(batch, recorded)| recorded.elapsed() < young && *batch > last);
        let aged = self.spares.len() < held;
        if aged {
            self.wanted = (self.wanted / 2).max(MIN_WANTED);
        }
        let spare = if self.spares.is_empty() {
            // Out because they aged is a quiet writer, not a busy one.
            if !aged {
                self.wanted = (self.wanted * 2).min(MAX_WANTED);
            }
            Err(new_claim_token())
        } else {
            Ok(self.spares.remove(0).0)
        };
        self.last = match &spare {
            Ok(batch) | Err(batch) => batch.clone(),
        };
        spare
    }

    /// How many spares to record now: none until half of `wanted` are taken.
    fn to_record(&self) -> usize {
        if self.spares.len() > self.wanted / 2 {
            0
        } else {
            self.wanted - self.spares.len()
        }
    }
}

/// A batch held by this process's writer until `lease` from now.
fn held(batch: &str, lease: Duration) -> Document {
    doc! { "_id": batch, "owner": ENQUEUER, "until": lease_end(lease) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YOUNG: Duration = Duration::from_secs(15);

    fn recorded(state: &mut DeskState, n: usize, at: Instant) {
        let ids = (0..n).map(|_| (new_claim_token(), at));
        state.spares.extend(ids);
    }

    #[test]
    fn a_busy_writer_gets_spares_recorded_many_to_an_insert() {
        let mut state = DeskState::new();
        // The desk's inserts land a few hand-outs after they start.
        let mut landing: Option<(usize, usize)> = None;
        let (mut inserts, mut own) = (0, 0);
        for handed in 0..1000 {
            if state.hand_out(YOUNG).is_err() {
                own += 1;
            }
            if let Some((n, _)) = landing.filter(|(_, at)| *at <= handed) {
                recorded(&mut state, n, Instant::now());
                landing = None;
            }
            if landing.is_none() && state.to_record() > 0 {
                landing = Some((state.to_record(), handed + 3));
                inserts += 1;
            }
        }
        assert!(state.wanted > MIN_WANTED, "wanted grew to {}", state.wanted);
        assert!(
            inserts + own < 1000 / 5,
            "{inserts} + {own} inserts for 1000 batches"
        );
    }

    #[test]
    fn spares_that_grow_old_shrink_what_is_wanted() {
        let mut state = DeskState::new();
        state.wanted = MAX_WANTED;
        let old = Instant::now()
            .checked_sub(YOUNG * 2)
            .expect("the clock is past boot");
        recorded(&mut state, 10, old);
        assert!(
            state.hand_out(YOUNG).is_err(),
            "old spares are not handed out"
        );
        assert!(state.spares.is_empty());
        assert_eq!(
            state.wanted,
            MAX_WANTED / 2,
            "halved, and not doubled for being out"
        );
        recorded(&mut state, 3, old);
        recorded(&mut state, 3, Instant::now());
        assert!(state.hand_out(YOUNG).is_ok());
        assert_eq!(state.wanted, MAX_WANTED / 4);
        for _ in 0..8 {
            recorded(&mut state, 1, old);
            let _ = state.hand_out(YOUNG);
        }
        assert_eq!(state.wanted, MIN_WANTED, "never below the least");
    }

    #[test]
    fn nothing_is_recorded_while_more_than_half_is_held() {
        let mut state = DeskState::new();
        state.wanted = 16;
        recorded(&mut state, 9, Instant::now());
        assert_eq!(state.to_record(), 0);
        let _ = state.hand_out(YOUNG);
        assert_eq!(state.to_record(), 8);
    }
}
