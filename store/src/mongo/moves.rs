//! Moving a claimed batch: the three idempotent steps of the module doc.

use std::collections::{HashSet, VecDeque};

use futures::TryStreamExt;
use futures::future::try_join_all;
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::claim::{MongoClaim, labels};
use super::codec::{duplicate_count, only_duplicate_keys, to_queue_doc};
use crate::record::Claim;
use crate::rollup::{self, BucketKey, Rollup};
use crate::{ClaimedBatch, MoveOutcome, Result, StoreError};

/// How many of its own finished batches a process remembers, so that it can drop their
/// `applied` entries without asking the database.
const REMEMBERED_FINISHED: usize = 1024;
/// Rollup buckets updated at once: each is its own document, so they never conflict.
const ROLLUPS_AT_ONCE: usize = 8;

impl MongoStore {
    /// Inserts the events, adds this batch's to the rollups, deletes the batch.
    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        self.check_ready()?;
        let Claim::Mongo(claim) = &batch.claim else {
            return Err(StoreError::Config(
                "a batch claimed elsewhere was moved on MongoDB".to_owned(),
            ));
        };
        let processed_at = BsonDateTime::now();
        let docs: Vec<Document> = batch
            .events
            .iter()
            .map(|e| {
                let mut d = to_queue_doc(e);
                d.insert("batch", &claim.batch);
                d.insert("processed_at", processed_at);
                d
            })
            .collect();
        let duplicates = match self.events.insert_many(docs).ordered(false).await {
            Ok(_) => 0,
            Err(e) if only_duplicate_keys(&e) => duplicate_count(&e),
            Err(e) => return Err(e.into()),
        };
        let outcome = MoveOutcome {
            inserted: batch.len() - duplicates,
            duplicates,
        };
        // Ours are the events this batch inserted, now or in an earlier attempt: all of
        // them when none was there already.
        let ours: Option<HashSet<String>> = if duplicates == 0 {
            None
        } else {
            let ids: Vec<String> = batch
                .events
                .iter()
                .map(|e| e.event_id.to_string())
                .collect();
            Some(
                self.events
                    .find(doc! { "_id": { "$in": &ids }, "batch": &claim.batch })
                    .projection(doc! { "_id": 1 })
                    .await?
                    .try_collect::<Vec<Document>>()
                    .await?
                    .iter()
                    .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
                    .collect(),
            )
        };
        let buckets = rollup::rollups_of(
            batch
                .events
                .iter()
                .filter(|e| {
                    ours.as_ref()
                        .is_none_or(|ours| ours.contains(&e.event_id.to_string()))
                })
                .map(rollup::Counted::from),
        );
        // Checked in the database, not only by the clock: a batch moved already (by a
        // retry, or by a worker whose lease ran out) must not be added again.
        let mut lease_ends = claim.lease_ends;
        if !self.renew_lease(claim, &mut lease_ends).await? {
            tracing::warn!(batch = %claim.batch, "the batch was taken over or moved already; leaving it");
            return Ok(outcome);
        }
        let buckets: Vec<(BucketKey, Rollup)> = buckets.into_iter().collect();
        for some in buckets.chunks(ROLLUPS_AT_ONCE) {
            let held =
                self.keep_lease(claim, &mut lease_ends).await?
                    && try_join_all(some.iter().map(|(key, delta)| {
                        self.add_to_rollup(key, delta, &claim.batch, lease_ends)
                    }))
                    .await?
                    .into_iter()
                    .all(|added| added);
            if !held {
                tracing::warn!(batch = %claim.batch, "another worker took the batch over; leaving the rest to it");
                return Ok(outcome);
            }
        }
        self.queue
            .delete_many(doc! { "batch": labels(&claim.batch, &claim.members) })
            .await?;
        self.finish(claim).await?;
        Ok(outcome)
    }

    /// Forgets the batch, and remembers it as finished, if it is still ours: a worker
    /// that took it over meanwhile finishes it, and until then its `applied` entries
    /// must stay.
    async fn finish(&self, claim: &MongoClaim) -> Result<()> {
        if self
            .forget_batch(&claim.batch, &claim.members, &claim.owner)
            .await?
        {
            let mut finished = self.finished_batches();
            if finished.len() == REMEMBERED_FINISHED {
                finished.pop_front();
            }
            finished.push_back(claim.batch.clone());
        }
        Ok(())
    }

    fn finished_batches(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        crate::lock(&self.finished)
    }

    /// Of the batches recorded in a bucket's `applied`, those whose moves are over: this
    /// process moved them, or their batch is gone. No worker applies a finished batch
    /// again (it would need a lease on it), so their entries can be dropped.
    pub(super) async fn finished_among(&self, batches: &[&str]) -> Result<Vec<String>> {
        let (mine, unknown): (Vec<&str>, Vec<&str>) = {
            let finished = self.finished_batches();
            batches
                .iter()
                .partition(|b| finished.iter().any(|f| f == *b))
        };
        let mut done: Vec<String> = mine.into_iter().map(str::to_owned).collect();
        if !unknown.is_empty() {
            let live: HashSet<String> = self
                .batch_ids(doc! { "_id": { "$in": &unknown } })
                .await?
                .into_iter()
                .collect();
            done.extend(
                unknown
                    .into_iter()
                    .filter(|b| !live.contains(*b))
                    .map(str::to_owned),
            );
        }
        Ok(done)
    }
}
