//! Claims: a worker takes the oldest released batches under a lease, or takes over a
//! batch whose holder's lease ran out (a worker or writer that stopped).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::codec::{bson_time, from_doc};
use super::desk::ENQUEUER;
use super::queue::events_in;
use crate::record::Claim;
use crate::{ClaimedBatch, QueuedEvent, Result, StoreError, new_claim_token};

/// Most failed claims remembered for handing back their batches; past it, the oldest's
/// are left to their lease.
const MAX_UNRETURNED: usize = 64;

/// A worker's hold on a batch and its members.
#[derive(Debug)]
pub(crate) struct MongoClaim {
    /// The batch's id.
    pub(super) batch: String,
    /// Batches joined into this one, whose queued events still carry their own ids.
    pub(super) members: Vec<String>,
    /// This worker's claim on the batch: the batch's `owner`.
    pub(super) owner: String,
    /// When this worker's lease on the batch ends.
    pub(super) lease_ends: Instant,
}

impl MongoStore {
    /// A batch whose worker's lease ran out, taken over whole (with its members); else the
    /// oldest released batches, up to `max` events, joined into one. A batch whose lease
    /// ran out before its writer released it was never acknowledged: its events are
    /// discarded on the way.
    pub(crate) async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        self.check_ready()?;
        self.hand_back_unreturned().await?;
        let owner = new_claim_token();
        // Measured before the lease is written, so this worker's view ends no later.
        let lease_ends = Instant::now() + self.claim_lease;
        while let Some(expired) = self
            .batches
            .find_one_and_update(
                doc! { "until": { "$gt": released(), "$lt": BsonDateTime::now() } },
                doc! { "$set": { "owner": &owner, "until": self.lease_end() } },
            )
            .await?
        {
            let batch = batch_id(&expired)?;
            if expired.get_str("owner") == Ok(ENQUEUER) {
                self.discard_unreleased(&batch, &owner).await?;
                continue;
            }
            let members = self.members_of(&batch).await?;
            let events = self.batch_events(&batch, &members).await?;
            if !events.is_empty() {
                tracing::warn!(%batch, events = events.len(), "took over a batch whose worker or writer stopped");
                return Ok(claimed(
                    MongoClaim {
                        batch,
                        members,
                        owner,
                        lease_ends,
                    },
                    events,
                    true, // others may have stopped too
                ));
            }
            // Its worker finished all but forgetting the batch itself.
            self.forget_batch(&batch, &members, &owner).await?;
        }
        Ok(self
            .claim_released(max, &owner, lease_ends)
            .await?
            .unwrap_or_else(ClaimedBatch::nothing))
    }

    /// Takes the oldest released batches, as many as fit in `max` events (at least one),
    /// and joins the others to the first as its members. Only released batches join: no
    /// worker has ever held them, so none can be moving them on their own.
    async fn claim_released(
        &self,
        max: usize,
        owner: &str,
        lease_ends: Instant,
    ) -> Result<Option<ClaimedBatch>> {
        let candidates: Vec<Document> = self
            .batches
            .find(doc! { "until": released() })
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(max).unwrap_or(i64::MAX))
            .projection(doc! { "_id": 1, "events": 1 })
            .await?
            .try_collect()
            .await?;
        let mut chosen = Vec::new();
        let mut total = 0_u64;
        for c in &candidates {
            let events = u64::try_from(c.get_i64("events").unwrap_or(1)).unwrap_or(1);
            if !chosen.is_empty() && total + events > max as u64 {
                break;
            }
            total += events;
            chosen.push(batch_id(c)?);
        }
        if chosen.is_empty() {
            return Ok(None);
        }
        let more_waiting = chosen.len() < candidates.len() || candidates.len() >= max;
        let held = self
            .take_and_join(&chosen, more_waiting, owner, lease_ends)
            .await;
        // Only when the database was away: batches that fail for good (a corrupt
        // document) wait out their lease, so that the batches behind them still move.
        if held.as_ref().is_err_and(StoreError::is_unavailable) {
            self.release_taken(owner).await;
        }
        held
    }

    /// Takes the `chosen` batches still released (a racing worker takes the rest) as
    /// `owner`, joins them into one, and reads its events.
    async fn take_and_join(
        &self,
        chosen: &[String],
        more_waiting: bool,
        owner: &str,
        lease_ends: Instant,
    ) -> Result<Option<ClaimedBatch>> {
        self.batches
            .update_many(
                doc! { "_id": { "$in": chosen }, "until": released() },
                doc! { "$set": { "owner": owner, "until": self.lease_end() } },
            )
            .await?;
        let mut ours = self
            .batch_ids(doc! { "_id": { "$in": chosen }, "owner": owner })
            .await?;
        ours.sort();
        let Some((batch, joined)) = ours.split_first() else {
            return Ok(None); // all taken by other workers; the next poll tries again
        };
        let members = if joined.is_empty() {
            Vec::new()
        } else {
            if Instant::now() >= lease_ends {
                // Too slow: the lease ran out. Handed back at once rather than left to
                // wait out the lease; any that another worker took over meanwhile stay its.
                self.release_taken(owner).await;
                return Ok(None);
            }
            // Members lose their own lease: from now on they move, or are taken over,
            // only with `batch`. The filter on owner keeps any that another worker took
            // over meanwhile out of it.
            let joining = self
                .batches
                .update_many(
                    doc! { "_id": { "$in": joined }, "owner": owner },
                    doc! { "$set": { "member_of": batch }, "$unset": { "until": "" } },
                )
                .await?;
            if joining.modified_count == joined.len() as u64 {
                joined.to_vec()
            } else {
                self.members_of(batch).await?
            }
        };
        let events = self.batch_events(batch, &members).await?;
        if events.is_empty() {
            self.forget_batch(batch, &members, owner).await?;
            return Ok(None);
        }
        Ok(Some(claimed(
            MongoClaim {
                batch: batch.clone(),
                members,
                owner: owner.to_owned(),
                lease_ends,
            },
            events,
            more_waiting,
        )))
    }

    /// Hands back, released, the batches a claim took before it failed (the database
    /// dropped the connection, perhaps after taking them), so that the next poll takes
    /// them at once instead of after their lease. None of them has been moved: the
    /// claim never answered them. If this fails too, the next claim hands them back.
    async fn release_taken(&self, owner: &str) {
        if let Err(e) = self.hand_back(&[owner.to_owned()]).await {
            tracing::warn!(error = %e, "a failed claim's batches were not handed back yet: the next claim will");
            let mut unreturned = crate::lock(&self.unreturned);
            if unreturned.len() == MAX_UNRETURNED {
                unreturned.remove(0); // their lease hands them on
            }
            unreturned.push(owner.to_owned());
        }
    }

    /// Hands back the batches of failed claims that could not hand them back themselves.
    async fn hand_back_unreturned(&self) -> Result<()> {
        let owners = crate::lock(&self.unreturned).clone();
        if owners.is_empty() {
            return Ok(());
        }
        self.hand_back(&owners).await?;
        crate::lock(&self.unreturned).retain(|owner| !owners.contains(owner));
        Ok(())
    }

    /// Releases the batches `owners` hold. A batch that another worker took over after
    /// its lease has another owner, and is left alone.
    async fn hand_back(&self, owners: &[String]) -> Result<()> {
        self.batches
            .update_many(
                doc! { "owner": { "$in": owners } },
                doc! { "$set": { "owner": "", "until": released() }, "$unset": { "member_of": "" } },
            )
            .await?;
        Ok(())
    }

    /// Deletes the events of a batch its writer never released, then the batch.
    async fn discard_unreleased(&self, batch: &str, owner: &str) -> Result<()> {
        let discarded = self.queue.delete_many(doc! { "batch": batch }).await?;
        if discarded.deleted_count > 0 {
            tracing::warn!(%batch, documents = discarded.deleted_count, "discarded the events of a batch its writer never released: they were never acknowledged");
        }
        self.forget_batch(batch, &[], owner).await?;
        Ok(())
    }

    /// The batches joined to `batch`.
    async fn members_of(&self, batch: &str) -> Result<Vec<String>> {
        self.batch_ids(doc! { "member_of": batch }).await
    }

    pub(super) async fn batch_ids(&self, filter: Document) -> Result<Vec<String>> {
        self.batches
            .find(filter)
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(batch_id)
            .collect()
    }

    /// The queued events of `batch` and its members, oldest first, each once: the queue
    /// keeps an event sent twice as often as it came.
    async fn batch_events(&self, batch: &str, members: &[String]) -> Result<Vec<QueuedEvent>> {
        let docs: Vec<Document> = self
            .queue
            .find(doc! { "batch": labels(batch, members) })
            .await?
            .try_collect()
            .await?;
        let mut events = Vec::new();
        for d in &docs {
            for e in events_in(d)? {
                events.push(from_doc(e)?);
            }
        }
        events.sort_by_key(|e| (e.ingested_at, e.event_id));
        let mut seen = HashSet::with_capacity(events.len());
        events.retain(|e| seen.insert(e.event_id));
        Ok(events)
    }

    /// Deletes a batch held by `owner` whose events are gone: its members first, so that
    /// none is left pointing at a batch that no longer exists. False when another owner
    /// holds it now.
    pub(super) async fn forget_batch(
        &self,
        batch: &str,
        members: &[String],
        owner: &str,
    ) -> Result<bool> {
        if !members.is_empty() {
            self.batches
                .delete_many(doc! { "member_of": batch })
                .await?;
        }
        let deleted = self
            .batches
            .delete_one(doc! { "_id": batch, "owner": owner })
            .await?;
        Ok(deleted.deleted_count == 1)
    }

    /// Renews this worker's lease on the batch once half of it is gone. False when
    /// another worker has taken the batch over, or it is finished.
    pub(super) async fn keep_lease(
        &self,
        claim: &MongoClaim,
        lease_ends: &mut Instant,
    ) -> Result<bool> {
        if Instant::now() + self.claim_lease / 2 < *lease_ends {
            return Ok(true);
        }
        self.renew_lease(claim, lease_ends).await
    }

    /// Renews this worker's lease on the batch now. False when another worker has taken
    /// the batch over, or it is finished.
    pub(super) async fn renew_lease(
        &self,
        claim: &MongoClaim,
        lease_ends: &mut Instant,
    ) -> Result<bool> {
        let now = Instant::now();
        let renewed = self
            .batches
            .update_one(
                doc! { "_id": &claim.batch, "owner": &claim.owner },
                doc! { "$set": { "until": self.lease_end() } },
            )
            .await?;
        if renewed.matched_count == 1 {
            *lease_ends = now + self.claim_lease;
        }
        Ok(renewed.matched_count == 1)
    }

    fn lease_end(&self) -> BsonDateTime {
        lease_end(self.claim_lease)
    }
}

fn claimed(claim: MongoClaim, events: Vec<QueuedEvent>, more_waiting: bool) -> ClaimedBatch {
    ClaimedBatch {
        events: events.into(),
        more_waiting,
        lease_ends: claim.lease_ends,
        claim: Claim::Mongo(claim),
    }
}

/// When a lease of `lease` taken now ends.
pub(super) fn lease_end(lease: Duration) -> BsonDateTime {
    chrono::Duration::from_std(lease)
        .map(|lease| bson_time(Utc::now() + lease))
        .unwrap_or_else(|_| BsonDateTime::now())
}

/// The `until` of a released batch: ready for any worker, held by none.
pub(super) fn released() -> BsonDateTime {
    BsonDateTime::from_millis(0)
}

/// Matches the events queued in `batch` or in any of its members.
pub(super) fn labels(batch: &str, members: &[String]) -> Bson {
    if members.is_empty() {
        Bson::from(batch)
    } else {
        let mut all = vec![Bson::from(batch)];
        all.extend(members.iter().map(|m| Bson::from(m.as_str())));
        Bson::Document(doc! { "$in": all })
    }
}

fn batch_id(batch: &Document) -> Result<String> {
    batch
        .get_str("_id")
        .map(str::to_owned)
        .map_err(|_| StoreError::Corrupt(format!("batch without id: {batch}")))
}
