//! Moving a claimed batch: the three idempotent steps of the module doc, with dead
//! letters and the values dictionary.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::future::try_join_all;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::claim::{MongoClaim, labels};
use super::codec::{
    DUPLICATE_KEY, bson_id, duplicate_indexes, id_of, only_duplicate_keys, refused_documents,
    to_queue_doc,
};
use super::events::{self, batch_label, context_text, to_event_doc};
use crate::record::Claim;
use crate::rollup::visits::{Visitor, add_visits, continuations, visitors_of};
use crate::rollup::{self, BucketKey, Rollup};
use crate::{ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreError};
use uuid::Uuid;

/// How many of its own finished batches a process remembers, so that it can drop their
/// `applied` entries without asking the database.
const REMEMBERED_FINISHED: usize = 1024;
/// Rollup buckets updated at once: each is its own document, so they never conflict.
const ROLLUPS_AT_ONCE: usize = 8;
/// Most value ids a process remembers as being in the dictionary.
const KNOWN_VALUES: usize = 100_000;
/// The first wait for visitors another batch holds; it doubles up to 16 times this.
const LOCK_PAUSE: Duration = Duration::from_millis(10);

impl MongoStore {
    /// Locks the batch's visitors, inserts the events, adds this batch's to the
    /// rollups, saves the visitors' states, deletes the batch.
    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        self.check_ready()?;
        let keys = self.hash_keys()?;
        let Claim::Mongo(claim) = &batch.claim else {
            return Err(StoreError::Config(
                "a batch claimed elsewhere was moved on MongoDB".to_owned(),
            ));
        };
        // Events of users erased since they arrived are dropped with the batch.
        let erasures = self.erasures().await?;
        let erased: HashSet<usize> = if erasures.is_empty() {
            HashSet::new()
        } else {
            (0..batch.len())
                .filter(|i| erasures.iter().any(|e| e.covers(&batch.events[*i])))
                .collect()
        };
        let kept: Vec<usize> = (0..batch.len()).filter(|i| !erased.contains(i)).collect();
        let visitors = visitors_of(kept.iter().map(|i| &batch.events[*i]));
        let Some(mut locked) = self.lock_visitors_patiently(&visitors, claim).await? else {
            return Err(StoreError::Unavailable(
                "the batch's visitors are held by other batches; trying again".to_owned(),
            ));
        };
        let rewrites: HashMap<Uuid, String> = continuations(&batch.events, &locked.states)
            .into_iter()
            .collect();
        let events: Vec<Cow<'_, QueuedEvent>> = batch
            .events
            .iter()
            .map(|e| match rewrites.get(&e.event_id) {
                Some(user) => Cow::Owned(QueuedEvent {
                    user_id: Some(user.clone()),
                    ..e.clone()
                }),
                None => Cow::Borrowed(e),
            })
            .collect();
        // The contexts' texts go in first, so that no stored event references a
        // missing one.
        let contexts: HashMap<u64, String> = kept
            .iter()
            .filter_map(|i| context_text(&keys, &events[*i].context))
            .collect();
        let collided = self.record_values(&contexts).await?;
        let (label, moved) = (batch_label(&claim.batch), BsonDateTime::now());
        let docs: Vec<Document> = kept
            .iter()
            .map(|i| to_event_doc(&keys, &events[*i], &label, moved, &collided))
            .collect();
        let refused = if docs.is_empty() {
            Vec::new()
        } else {
            match self.events.insert_many(docs).ordered(false).await {
                Ok(_) => Vec::new(),
                Err(e) => refused_documents(e)?
                    .into_iter()
                    .filter_map(|(i, code, message)| Some((*kept.get(i)?, code, message)))
                    .collect(),
            }
        };
        let (mut ours, duplicates, dead) = self.sort_refused(batch, &claim.batch, refused).await?;
        ours.retain(|i| !erased.contains(i));
        let dropped = erased.len();
        let outcome = MoveOutcome {
            inserted: kept.len() - duplicates - dead.len(),
            duplicates: duplicates + dropped,
            dead_lettered: dead.len(),
        };
        self.dead_letter(batch, &claim.batch, &dead).await?;
        let counted: Vec<&QueuedEvent> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| ours.contains(i))
            .map(|(_, e)| e.as_ref())
            .collect();
        let mut contribution = rollup::rollups_of(&keys, counted.iter().copied());
        // Visitors an earlier attempt saved are done: their buckets have the batch.
        let following: Vec<&QueuedEvent> = counted
            .iter()
            .copied()
            .filter(|e| match &e.user_id {
                Some(user) => !locked.done.contains(&(e.site_id.clone(), user.clone())),
                None => true,
            })
            .collect();
        add_visits(&keys, &following, &mut locked.states, &mut contribution);
        self.record_values(&*contribution.values).await?;
        self.record_event_types(contribution.buckets.keys()).await?;
        // Checked in the database, not only by the clock: a batch moved already (by a
        // retry, or by a worker whose lease ran out) must not be added again.
        let mut lease_ends = claim.lease_ends;
        if !self.renew_lease(claim, &mut lease_ends).await? {
            tracing::warn!(batch = %claim.batch, "the batch was taken over or moved already; leaving it");
            return Ok(MoveOutcome::default());
        }
        let buckets: Vec<(BucketKey, Rollup)> = contribution.buckets.into_iter().collect();
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
                return Ok(MoveOutcome::default());
            }
        }
        let saved = visitors_of(following.iter().copied());
        self.save_visitors(&saved, &locked.states, &visitors, &claim.batch)
            .await?;
        self.queue
            .delete_many(doc! { "batch": labels(&claim.batch, &claim.members) })
            .await?;
        self.finish(claim).await?;
        Ok(outcome)
    }

    /// Locks the batch's visitors, waiting a little for other batches to let go of
    /// theirs, at most while the claim's lease lasts.
    async fn lock_visitors_patiently(
        &self,
        visitors: &[Visitor],
        claim: &MongoClaim,
    ) -> Result<Option<super::visits::Locked>> {
        let mut pause = LOCK_PAUSE;
        loop {
            if let Some(locked) = self
                .lock_visitors(visitors, &claim.batch, self.claim_lease)
                .await?
            {
                return Ok(Some(locked));
            }
            if Instant::now() + pause >= claim.lease_ends {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LOCK_PAUSE * 16);
        }
    }

    /// Sorts the documents `events` refused: a duplicate of an id stored already is a
    /// copy, or this batch's own if an earlier attempt of it stored it (then this move
    /// counts it, as if it had stored it); anything else, a duplicate on another unique
    /// index included, is refused for good. Answers the indexes of the events this batch
    /// counts, how many were copies stored by other batches, and the dead (index and
    /// error).
    async fn sort_refused(
        &self,
        batch: &ClaimedBatch,
        label: &str,
        refused: Vec<(usize, i32, String)>,
    ) -> Result<(HashSet<usize>, usize, Vec<(usize, String)>)> {
        let mut ours: HashSet<usize> = (0..batch.len()).collect();
        if refused.is_empty() {
            return Ok((ours, 0, Vec::new()));
        }
        let maybe_stored: Vec<Bson> = refused
            .iter()
            .filter(|(_, code, _)| *code == DUPLICATE_KEY)
            .filter_map(|(i, _, _)| batch.events.get(*i))
            .map(|e| events::uuid(&e.event_id))
            .collect();
        let label = batch_label(label);
        let stored: HashMap<Uuid, bool> = if maybe_stored.is_empty() {
            HashMap::new()
        } else {
            self.events
                .find(doc! { events::ID: { "$in": &maybe_stored } })
                .projection(doc! { events::ID: 1, events::BATCH: 1 })
                .await?
                .try_collect::<Vec<Document>>()
                .await?
                .iter()
                .filter_map(|d| {
                    let mine = d.get(events::BATCH) == Some(&label);
                    Some((events::uuid_of(d.get(events::ID))?, mine))
                })
                .collect()
        };
        let mut duplicates = 0;
        let mut dead = Vec::new();
        for (i, code, message) in refused {
            ours.remove(&i);
            let id = batch.events.get(i).map(|e| e.event_id);
            match id.and_then(|id| stored.get(&id).copied()) {
                Some(true) if code == DUPLICATE_KEY => {
                    ours.insert(i);
                }
                Some(false) if code == DUPLICATE_KEY => duplicates += 1,
                _ => dead.push((i, message)),
            }
        }
        Ok((ours, duplicates, dead))
    }

    /// Keeps the events refused for good in `dead_letters`, with their error, and logs
    /// each the first time.
    async fn dead_letter(
        &self,
        batch: &ClaimedBatch,
        label: &str,
        dead: &[(usize, String)],
    ) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let failed_at = BsonDateTime::now();
        let docs: Vec<Document> = dead
            .iter()
            .filter_map(|(i, error)| {
                let mut d = to_queue_doc(batch.events.get(*i)?);
                d.insert("batch", label);
                d.insert("error", error);
                d.insert("failed_at", failed_at);
                Some(d)
            })
            .collect();
        let already = match self.dead_letters.insert_many(docs).ordered(false).await {
            Ok(_) => HashSet::new(),
            Err(e) if only_duplicate_keys(&e) => duplicate_indexes(&e),
            Err(e) => return Err(e.into()),
        };
        for (n, (i, error)) in dead.iter().enumerate() {
            if let (false, Some(e)) = (already.contains(&n), batch.events.get(*i)) {
                tracing::error!(event_id = %e.event_id, error, "the database refused an event for good: it is in dead_letters");
            }
        }
        Ok(())
    }

    /// Puts the texts of `values` that the dictionary lacks into it; answers the ids
    /// that another text holds there (a hash collision). Ids this process knows to hold
    /// their text are not asked about.
    pub(super) async fn record_values<S: std::hash::BuildHasher>(
        &self,
        values: &std::collections::HashMap<u64, String, S>,
    ) -> Result<HashSet<u64>> {
        let unknown: Vec<(u64, &String)> = {
            let known = crate::lock(&self.known_values);
            values
                .iter()
                .filter(|(id, _)| !known.contains(id))
                .map(|(id, text)| (*id, text))
                .collect()
        };
        if unknown.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Bson> = unknown.iter().map(|(id, _)| bson_id(*id)).collect();
        let present: HashMap<u64, String> = self
            .values
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .filter_map(|d| Some((id_of(d)?, d.get_str("v").ok()?.to_owned())))
            .collect();
        let collided: HashSet<u64> = unknown
            .iter()
            .filter(|(id, text)| present.get(id).is_some_and(|there| there != *text))
            .map(|(id, _)| *id)
            .collect();
        let missing: Vec<Document> = unknown
            .iter()
            .filter(|(id, _)| !present.contains_key(id))
            .map(|(id, text)| doc! { "_id": bson_id(*id), "v": text.as_str() })
            .collect();
        if !missing.is_empty() {
            match self.values.insert_many(missing).ordered(false).await {
                Ok(_) => {}
                Err(e) if only_duplicate_keys(&e) => {} // another worker was first
                Err(e) => return Err(e.into()),
            }
        }
        let mut known = crate::lock(&self.known_values);
        if known.len() + unknown.len() > KNOWN_VALUES {
            known.clear();
        }
        known.extend(
            unknown
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !collided.contains(id)),
        );
        Ok(collided)
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
