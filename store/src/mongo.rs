//! The MongoDB backend.
//!
//! The queue is a collection (the seed's `QUEUE_NAME`) keyed by event id. Events arrive
//! in batches: each group commit writes its events stamped with a batch held by this
//! process (id, holder, lease in `batches`), which is then released. `desk` records
//! held batches ahead of need and releases written ones in bulk, after the answer. A
//! worker claims the oldest released batches, up to `BATCH_SIZE` events, and holds the
//! first under a lease with the others joined to it as members (their events keep their
//! labels; the members lose their own leases). Claiming therefore reads and writes only
//! the small `batches` collection, never searches or rewrites the queue, however deep it
//! is. If a holder dies, another worker takes its batch over, members and all, once the
//! lease runs out. (Events queued by earlier releases carry no batch; they are claimed
//! the old way, the oldest first.)
//!
//! Moving a batch uses no multi-document transaction, and every step is idempotent:
//!
//! 1. insert the events into `events` (keyed by event id), each stamped with the batch;
//!    an event already there belongs to whichever batch inserted it first;
//! 2. add the events that belong to this batch to their rollup buckets. Each bucket
//!    update is one compare-and-set on the bucket's version, which also records the
//!    batch id in `applied`, so a batch is added to a bucket at most once;
//! 3. delete the batch's events from the queue, then its members and itself.
//!
//! A worker killed anywhere loses nothing and counts nothing twice: the next owner redoes
//! the steps, and each finds its work done. A worker checks its lease in the database
//! before step 2 and renews it while it works, stops as soon as another has taken the
//! batch over, and sends a bucket update only while its lease holds. A worker that takes
//! the batch over changes the bucket's version before it can finish, so no stale update
//! lands after that. The batch document is deleted only by its current owner, and once it
//! is gone nobody can apply the batch again, so the next update of each bucket drops its
//! `applied` entry: buckets stay small however long the worker runs.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacon_protocol::{Stats, TimeRange};
use chrono::Utc;
use futures::TryStreamExt;
use futures::future::try_join_all;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use uuid::Uuid;

mod desk;

use desk::BatchDesk;

use crate::rollup::{self, BucketKey, Piece, Rollup};
use crate::sketch::Sketch;
use crate::{
    ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreConfig, StoreError, from_millis, millis,
    new_claim_token,
};

const EVENTS: &str = "events";
const SALTS: &str = "salts";
const ROLLUPS: &str = "rollups";
const BATCHES: &str = "batches";
/// How many of its own finished batches a process remembers, so that it can drop their
/// `applied` entries without asking the database.
const REMEMBERED_FINISHED: usize = 1024;
/// Rollup buckets updated at once: each is its own document, so they never conflict.
const ROLLUPS_AT_ONCE: usize = 8;
const DUPLICATE_KEY: i32 = 11000;
/// The owner of a batch whose events are still being written.
const ENQUEUER: &str = "enqueuer";
/// How long an operation waits for a reachable server before the caller gets a 503.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// A MongoDB database holding the queue and `events`.
#[derive(Debug, Clone)]
pub struct MongoStore {
    queue: Collection<Document>,
    events: Collection<Document>,
    salts: Collection<Document>,
    rollups: Collection<Document>,
    batches: Collection<Document>,
    description: Arc<str>,
    claim_lease: Duration,
    /// Set once collections and indexes exist. Until then writes are refused, so that no
    /// insert creates a collection implicitly while another client runs `createIndexes`
    /// (SecantusDB deadlocks on that race; mongod merely builds indexes on live data).
    ready: Arc<AtomicBool>,
    /// Batches for group commits, recorded ahead and released after the answer.
    desk: Arc<BatchDesk>,
    /// Batches this process moved lately, oldest first: their `applied` entries can go.
    finished: Arc<Mutex<VecDeque<String>>>,
}

/// One process creates collections and indexes one at a time.
static DDL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NAMESPACE_EXISTS: i32 = 48;

impl MongoStore {
    pub(crate) async fn open(url: &str, config: &StoreConfig) -> Result<Self> {
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| StoreError::Config(format!("MONGO_URL cannot be parsed: {e}")))?;
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.app_name.get_or_insert_with(|| "beacon".to_owned());
        // Acknowledged means journaled: a queued event survives a database restart.
        options.write_concern = Some(WriteConcern::builder().journal(true).build());
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| "beacon".to_owned());
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        let client = Client::with_options(options)?;
        let db = client.database(&database);
        Ok(Self {
            queue: db.collection(&config.queue_name),
            events: db.collection(EVENTS),
            salts: db.collection(SALTS),
            rollups: db.collection(ROLLUPS),
            batches: db.collection(BATCHES),
            description: format!(
                "MongoDB database `{database}` on {} (queue `{}`)",
                hosts.join(","),
                config.queue_name
            )
            .into(),
            claim_lease: config.claim_lease,
            ready: Arc::new(AtomicBool::new(false)),
            desk: BatchDesk::new(db.collection(BATCHES), config.claim_lease),
            finished: Arc::default(),
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.description.to_string()
    }

    pub(crate) async fn ensure_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ddl = DDL.lock().await;
        let db = self.queue.namespace().db;
        let database = self.queue.client().database(&db);
        for name in [
            self.queue.name(),
            self.events.name(),
            self.salts.name(),
            self.rollups.name(),
            self.batches.name(),
        ] {
            match database.create_collection(name).await {
                Ok(()) => {}
                Err(e) if command_code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let indexes = [
            (&self.queue, doc! { "batch": 1, "ingested_at": 1 }),
            (&self.events, doc! { "site_id": 1, "timestamp": 1 }),
            (
                &self.rollups,
                doc! { "site_id": 1, "granularity": 1, "event_type": 1, "start": 1 },
            ),
            (&self.batches, doc! { "until": 1 }),
        ];
        for (collection, keys) in indexes {
            collection
                .create_index(IndexModel::builder().keys(keys).build())
                .await?;
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    fn check_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "collections and indexes are not created yet".to_owned(),
            ))
        }
    }

    /// Queues `events` as one batch: written into a batch held by this process (see
    /// `desk`), which is released in the background once they are in. A writer that
    /// dies before releasing leaves a lease; when it runs out, a worker takes over
    /// whatever was written.
    pub(crate) async fn enqueue(&self, events: &[QueuedEvent]) -> Result<()> {
        self.check_ready()?;
        let batch = match self.desk.spare() {
            Some(batch) => batch,
            None => self.desk.record().await?,
        };
        let docs: Vec<Document> = events
            .iter()
            .map(|e| {
                let mut d = to_queue_doc(e);
                d.insert("batch", &batch);
                d
            })
            .collect();
        match self.queue.insert_many(docs).ordered(false).await {
            Ok(_) => {}
            Err(e) if only_duplicate_keys(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.desk.release(batch, events.len() as u64);
        Ok(())
    }

    /// Waits until every batch this process queued has been released.
    pub(crate) async fn settle(&self) {
        self.desk.settle().await;
    }

    pub(crate) async fn daily_salt(
        &self,
        day: &str,
        oldest_kept: &str,
        fresh: [u8; 32],
    ) -> Result<Vec<u8>> {
        self.check_ready()?;
        let salt = binary(fresh.to_vec());
        let upsert = || {
            self.salts
                .find_one_and_update(
                    doc! { "_id": day },
                    doc! { "$setOnInsert": { "salt": salt.clone() } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
        };
        // Two servers may upsert the same new day at once; the loser sees a duplicate key
        // and reads the winner's salt.
        let stored = match upsert().await {
            Err(e) if is_duplicate_key(&e) => upsert().await?,
            other => other?,
        };
        let bytes = stored
            .as_ref()
            .and_then(|d| d.get_binary_generic("salt").ok())
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("salt for {day} is missing")))?;
        self.salts
            .delete_many(doc! { "_id": { "$lt": oldest_kept } })
            .await?;
        Ok(bytes)
    }

    fn lease_end(&self) -> BsonDateTime {
        lease_end(self.claim_lease)
    }

    /// A batch whose holder's lease ran out, taken over whole (with its members); else the
    /// oldest released batches, up to `max` events, joined into one; else (for events
    /// queued by earlier releases, which left them unassigned) a new batch of the oldest
    /// unassigned events.
    pub(crate) async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        self.check_ready()?;
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
            let members = self.members_of(&batch).await?;
            let events = self.batch_events(&batch, &members).await?;
            if !events.is_empty() {
                tracing::warn!(%batch, events = events.len(), "took over a batch whose worker or writer stopped");
                return Ok(ClaimedBatch {
                    token: batch,
                    members,
                    owner,
                    lease_ends,
                    events,
                    more_waiting: true, // others may have stopped too
                });
            }
            // Its worker finished all but forgetting the batch itself.
            self.forget_batch(&batch, &members, &owner).await?;
        }
        if let Some(claimed) = self.claim_released(max, &owner, lease_ends).await? {
            return Ok(claimed);
        }
        self.claim_unassigned(max, owner, lease_ends).await
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
        // Only batches still released are held: a racing worker takes the rest.
        self.batches
            .update_many(
                doc! { "_id": { "$in": &chosen }, "until": released() },
                doc! { "$set": { "owner": owner, "until": self.lease_end() } },
            )
            .await?;
        let mut ours = self
            .batch_ids(doc! { "_id": { "$in": &chosen }, "owner": owner })
            .await?;
        ours.sort();
        let Some((batch, joined)) = ours.split_first() else {
            return Ok(None); // all taken by other workers; the next poll tries again
        };
        let members = if joined.is_empty() {
            Vec::new()
        } else {
            if Instant::now() >= lease_ends {
                return Ok(None); // too slow: the lease runs out and another worker takes them
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
        Ok(Some(ClaimedBatch {
            token: batch.clone(),
            members,
            owner: owner.to_owned(),
            lease_ends,
            events,
            more_waiting: chosen.len() < candidates.len() || candidates.len() >= max,
        }))
    }

    /// A new batch of the oldest unassigned events, which only earlier releases wrote.
    async fn claim_unassigned(
        &self,
        max: usize,
        owner: String,
        lease_ends: Instant,
    ) -> Result<ClaimedBatch> {
        let candidates: Vec<Document> = self
            .queue
            .find(doc! { "batch": Bson::Null })
            .sort(doc! { "batch": 1, "ingested_at": 1 })
            .limit(i64::try_from(max).unwrap_or(i64::MAX))
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let ids: Vec<Bson> = candidates
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        let batch = new_claim_token();
        if ids.is_empty() {
            // The usual case once no event from an earlier release is left: no writes.
            return Ok(ClaimedBatch {
                token: batch,
                members: Vec::new(),
                owner,
                lease_ends,
                events: Vec::new(),
                more_waiting: false,
            });
        }
        // The batch is recorded before any event joins it, so that a worker dying in
        // between leaves a lease behind, not orphaned events.
        self.batches
            .insert_one(doc! { "_id": &batch, "owner": &owner, "until": self.lease_end() })
            .await?;
        let more_waiting = ids.len() >= max;
        // Only still-unassigned events join: a racing worker takes the rest.
        self.queue
            .update_many(
                doc! { "_id": { "$in": ids }, "batch": Bson::Null },
                doc! { "$set": { "batch": &batch } },
            )
            .await?;
        let events = self.batch_events(&batch, &[]).await?;
        if events.is_empty() {
            self.forget_batch(&batch, &[], &owner).await?;
        }
        Ok(ClaimedBatch {
            token: batch,
            members: Vec::new(),
            owner,
            lease_ends,
            events,
            more_waiting,
        })
    }

    /// The batches joined to `batch`.
    async fn members_of(&self, batch: &str) -> Result<Vec<String>> {
        self.batch_ids(doc! { "member_of": batch }).await
    }

    async fn batch_ids(&self, filter: Document) -> Result<Vec<String>> {
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

    /// The queued events of `batch` and its members, oldest first.
    async fn batch_events(&self, batch: &str, members: &[String]) -> Result<Vec<QueuedEvent>> {
        let mut events: Vec<QueuedEvent> = self
            .queue
            .find(doc! { "batch": labels(batch, members) })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(from_doc)
            .collect::<Result<_>>()?;
        events.sort_by_key(|e| (e.ingested_at, e.event_id));
        Ok(events)
    }

    /// Deletes a batch held by `owner` whose events are gone: its members first, so that
    /// none is left pointing at a batch that no longer exists. False when another owner
    /// holds it now.
    async fn forget_batch(&self, batch: &str, members: &[String], owner: &str) -> Result<bool> {
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

    /// The four idempotent steps in the module doc.
    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        self.check_ready()?;
        let processed_at = BsonDateTime::now();
        let docs: Vec<Document> = batch
            .events
            .iter()
            .map(|e| {
                let mut d = to_queue_doc(e);
                d.insert("batch", &batch.token);
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
                    .find(doc! { "_id": { "$in": &ids }, "batch": &batch.token })
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
        let mut lease_ends = batch.lease_ends;
        if !self.renew_lease(batch, &mut lease_ends).await? {
            tracing::warn!(batch = %batch.token, "the batch was taken over or moved already; leaving it");
            return Ok(outcome);
        }
        let buckets: Vec<(BucketKey, Rollup)> = buckets.into_iter().collect();
        for some in buckets.chunks(ROLLUPS_AT_ONCE) {
            let held =
                self.keep_lease(batch, &mut lease_ends).await?
                    && try_join_all(some.iter().map(|(key, delta)| {
                        self.add_to_rollup(key, delta, &batch.token, lease_ends)
                    }))
                    .await?
                    .into_iter()
                    .all(|added| added);
            if !held {
                tracing::warn!(batch = %batch.token, "another worker took the batch over; leaving the rest to it");
                return Ok(outcome);
            }
        }
        self.queue
            .delete_many(doc! { "batch": labels(&batch.token, &batch.members) })
            .await?;
        // Finished only if still ours: a worker that took the batch over meanwhile
        // finishes it, and until then its `applied` entries must stay.
        if self
            .forget_batch(&batch.token, &batch.members, &batch.owner)
            .await?
        {
            let mut finished = self.finished_batches();
            if finished.len() == REMEMBERED_FINISHED {
                finished.pop_front();
            }
            finished.push_back(batch.token.clone());
        }
        Ok(outcome)
    }

    fn finished_batches(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        crate::lock(&self.finished)
    }

    /// Of the batches recorded in a bucket's `applied`, those whose moves are over: this
    /// process moved them, or their batch is gone. No worker applies a finished batch
    /// again (it would need a lease on it), so their entries can be dropped.
    async fn finished_among(&self, batches: &[&str]) -> Result<Vec<String>> {
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

    /// Renews this worker's lease on the batch once half of it is gone. False when
    /// another worker has taken the batch over, or it is finished.
    async fn keep_lease(&self, batch: &ClaimedBatch, lease_ends: &mut Instant) -> Result<bool> {
        if Instant::now() + self.claim_lease / 2 < *lease_ends {
            return Ok(true);
        }
        self.renew_lease(batch, lease_ends).await
    }

    /// Renews this worker's lease on the batch now. False when another worker has taken
    /// the batch over, or it is finished.
    async fn renew_lease(&self, batch: &ClaimedBatch, lease_ends: &mut Instant) -> Result<bool> {
        let now = Instant::now();
        let renewed = self
            .batches
            .update_one(
                doc! { "_id": &batch.token, "owner": &batch.owner },
                doc! { "$set": { "until": self.lease_end() } },
            )
            .await?;
        if renewed.matched_count == 1 {
            *lease_ends = now + self.claim_lease;
        }
        Ok(renewed.matched_count == 1)
    }

    /// Adds `delta` to a bucket once per batch: a compare-and-set on the bucket's
    /// version, retried when another worker got there first. False when this worker's
    /// lease ran out while retrying.
    async fn add_to_rollup(
        &self,
        key: &BucketKey,
        delta: &Rollup,
        token: &str,
        lease_ends: Instant,
    ) -> Result<bool> {
        let id = key.id();
        loop {
            if Instant::now() >= lease_ends {
                return Ok(false);
            }
            let now = BsonDateTime::now();
            let Some(stored) = self.rollups.find_one(doc! { "_id": &id }).await? else {
                let mut paths = Document::new();
                for (path, n) in &delta.paths {
                    paths.insert(rollup::path_key(path), count_bson(*n));
                }
                let new = doc! {
                    "_id": &id,
                    "site_id": &key.site_id,
                    "granularity": key.granularity.code(),
                    "event_type": &key.event_type,
                    "start": key.start,
                    "count": count_bson(delta.count),
                    "paths": paths,
                    "users": binary(delta.users.to_bytes()),
                    "version": 1_i64,
                    "applied": { token: now },
                };
                if Instant::now() >= lease_ends {
                    return Ok(false);
                }
                match self.rollups.insert_one(new).await {
                    Ok(_) => return Ok(true),
                    Err(e) if is_duplicate_key(&e) => {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let applied = stored.get_document("applied").ok();
            if applied.is_some_and(|a| a.contains_key(token)) {
                return Ok(true);
            }
            let others: Vec<&str> = applied
                .iter()
                .flat_map(|a| a.keys())
                .map(String::as_str)
                .collect();
            let finished = self.finished_among(&others).await?;
            let version = stored.get_i64("version").unwrap_or(0);
            let mut users = Sketch::from_bytes(
                stored
                    .get_binary_generic("users")
                    .map_or(&[][..], Vec::as_slice),
            )?;
            users.merge(&delta.users);
            let mut inc = doc! { "count": count_bson(delta.count), "version": 1_i64 };
            for (path, n) in &delta.paths {
                inc.insert(format!("paths.{}", rollup::path_key(path)), count_bson(*n));
            }
            let mut set = doc! { "users": binary(users.to_bytes()) };
            set.insert(format!("applied.{token}"), now);
            let mut update = doc! { "$inc": inc, "$set": set };
            if !finished.is_empty() {
                let unset: Document = finished
                    .iter()
                    .map(|old| (format!("applied.{old}"), Bson::String(String::new())))
                    .collect();
                update.insert("$unset", unset);
            }
            // Sent only under a live lease: a worker that took the batch over since then
            // changes the version before it can finish, so this write cannot land after.
            if Instant::now() >= lease_ends {
                return Ok(false);
            }
            let updated = self
                .rollups
                .update_one(doc! { "_id": &id, "version": version }, update)
                .await?;
            if updated.matched_count == 1 {
                return Ok(true);
            }
        }
    }

    /// Merges the buckets that tile the range, and counts raw events only at its ragged
    /// ends (under an hour each).
    pub(crate) async fn stats(&self, range: &TimeRange) -> Result<Stats> {
        let event_type = rollup::bucket_type(range);
        let mut total = Rollup::default();
        for piece in rollup::plan(range) {
            match piece {
                Piece::Buckets {
                    granularity,
                    from,
                    to,
                } => {
                    let mut start = Document::new();
                    if let Some(from) = from {
                        start.insert("$gte", from);
                    }
                    if let Some(to) = to {
                        start.insert("$lt", to);
                    }
                    let mut filter = doc! {
                        "site_id": &range.site_id,
                        "granularity": granularity.code(),
                        "event_type": event_type,
                    };
                    if !start.is_empty() {
                        filter.insert("start", start);
                    }
                    let mut cursor = self
                        .rollups
                        .find(filter)
                        .projection(doc! { "count": 1, "paths": 1, "users": 1 })
                        .await?;
                    while let Some(d) = cursor.try_next().await? {
                        total.count += count_field(&d, "count");
                        if let Ok(paths) = d.get_document("paths") {
                            for (key, n) in paths {
                                if let Some(path) = rollup::path_from_key(key) {
                                    *total.paths.entry(path).or_default() += count_of(n);
                                }
                            }
                        }
                        let users = d.get_binary_generic("users").map_or(&[][..], Vec::as_slice);
                        total.users.merge(&Sketch::from_bytes(users)?);
                    }
                }
                Piece::Raw { from, to } => {
                    let mut filter = doc! {
                        "site_id": &range.site_id,
                        "timestamp": {
                            "$gte": BsonDateTime::from_millis(from),
                            "$lt": BsonDateTime::from_millis(to),
                        },
                    };
                    if !event_type.is_empty() {
                        filter.insert("event_type", event_type);
                    }
                    let rows: Vec<Document> = self
                        .events
                        .find(filter)
                        .projection(doc! { "path": 1, "user_id": 1 })
                        .await?
                        .try_collect()
                        .await?;
                    let opt = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_owned);
                    rollup::add_raw(
                        &mut total,
                        rows.iter().map(|d| (opt(d, "path"), opt(d, "user_id"))),
                    );
                }
            }
        }
        Ok(total.into_stats(range.limit))
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64> {
        self.check_ready()?;
        Ok(self.queue.count_documents(doc! {}).await?)
    }

    pub(crate) async fn event_ids(&self, site_id: &str) -> Result<Vec<Uuid>> {
        let docs: Vec<Document> = self
            .events
            .find(doc! { "site_id": site_id })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| {
                d.get_str("_id")
                    .ok()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("bad event _id in {d}")))
            })
            .collect()
    }
}

fn bson_time(t: chrono::DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(millis(t))
}

fn count_field(d: &Document, field: &str) -> u64 {
    d.get(field).map_or(0, count_of)
}

fn count_of(value: &Bson) -> u64 {
    match value {
        Bson::Int32(n) => u64::try_from(*n).unwrap_or(0),
        Bson::Int64(n) => u64::try_from(*n).unwrap_or(0),
        Bson::Double(n) => *n as u64,
        _ => 0,
    }
}

fn count_bson(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

/// A single write (or upsert) that lost a race to insert the same `_id`.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => command_code(e) == Some(DUPLICATE_KEY),
    }
}

fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn duplicate_count(e: &mongodb::error::Error) -> usize {
    match &*e.kind {
        ErrorKind::InsertMany(err) => err.write_errors.as_ref().map_or(0, Vec::len),
        _ => 0,
    }
}

/// True when every write error of an insert is a duplicate key: those events are already
/// queued, which is what the caller wanted.
fn only_duplicate_keys(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(err) => {
            err.write_concern_error.is_none()
                && err
                    .write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// When a lease of `lease` taken now ends.
fn lease_end(lease: Duration) -> BsonDateTime {
    chrono::Duration::from_std(lease)
        .map(|lease| bson_time(Utc::now() + lease))
        .unwrap_or_else(|_| BsonDateTime::now())
}

/// The `until` of a released batch: ready for any worker, held by none.
fn released() -> BsonDateTime {
    BsonDateTime::from_millis(0)
}

/// Matches the events queued in `batch` or in any of its members.
fn labels(batch: &str, members: &[String]) -> Bson {
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

fn to_queue_doc(e: &QueuedEvent) -> Document {
    let mut d = doc! {
        "_id": e.event_id.to_string(),
        "site_id": &e.site_id,
        "event_type": &e.event_type,
        "path": e.path.as_deref().map_or(Bson::Null, Bson::from),
        "user_id": e.user_id.as_deref().map_or(Bson::Null, Bson::from),
        "timestamp": bson_time(e.timestamp),
        "ingested_at": bson_time(e.ingested_at),
        "batch": Bson::Null, // not in a batch yet
    };
    if let Some(props) = &e.props {
        // A JSON object always converts to a BSON document.
        if let Ok(Bson::Document(p)) = Bson::try_from(serde_json::Value::Object(props.clone())) {
            d.insert("props", p);
        }
    }
    d
}

fn from_doc(d: &Document) -> Result<QueuedEvent> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("queue document lacks {what}: {d}"));
    let opt_str = |k: &str| d.get_str(k).ok().map(str::to_owned);
    Ok(QueuedEvent {
        event_id: d
            .get_str("_id")
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| corrupt("_id"))?,
        site_id: opt_str("site_id").ok_or_else(|| corrupt("site_id"))?,
        event_type: opt_str("event_type").ok_or_else(|| corrupt("event_type"))?,
        path: opt_str("path"),
        user_id: opt_str("user_id"),
        timestamp: d
            .get_datetime("timestamp")
            .map_err(|_| corrupt("timestamp"))
            .and_then(|t| from_millis(t.timestamp_millis()))?,
        ingested_at: d
            .get_datetime("ingested_at")
            .map_err(|_| corrupt("ingested_at"))
            .and_then(|t| from_millis(t.timestamp_millis()))?,
        props: match d.get_document("props") {
            Ok(p) => match Bson::Document(p.clone()).into_relaxed_extjson() {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            },
            Err(_) => None,
        },
    })
}
