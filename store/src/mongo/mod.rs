//! The MongoDB backend.
//!
//! The queue is a collection (`QUEUE_NAME`) of groups of events. Events arrive in
//! batches: each group commit writes its events, as few documents as fit, stamped with
//! a batch held by this process (id, holder, lease in `batches`), and releases the
//! batch before it answers.
//! A worker claims the oldest released batches, up to `BATCH_SIZE` events, and holds the
//! first under a lease with the others joined to it as members (their events keep their
//! labels; the members lose their own leases). Claiming therefore reads and writes only
//! the small `batches` collection, never searches or rewrites the queue, however deep it
//! is. If a worker dies, another takes its batch over, members and all, once the lease
//! runs out. A batch whose lease runs out before it was released was never acknowledged
//! (its writer died, or its write failed or took too long): its events are discarded.
//!
//! Moving a batch uses no multi-document transaction, and every step is idempotent:
//!
//! 1. insert the events into `events` (keyed by event id), each stamped with the batch;
//!    an event already there belongs to whichever batch inserted it first. This is
//!    where an event sent twice becomes one: the queue keeps both copies. An event the
//!    database refuses for good (validation, size, another unique index) goes to
//!    `dead_letters` with the error instead, so that it never holds back the others;
//! 2. record the texts of the batch's values in the `values` dictionary and its event
//!    types in `event_types`, then add the events that belong to this batch to their
//!    rollup buckets. Each bucket update is one compare-and-set on the bucket's version,
//!    which also records the batch id in `applied`, so a batch is added to a bucket at
//!    most once;
//! 3. save the visitors' visit states, marked with the batch;
//! 4. delete the batch's events from the queue, then its members and itself.
//!
//! Visits need each visitor's state as the last batch left it, so a move first locks
//! its visitors' states (`visits`): no other batch changes them until it saves them
//! (step 3), and the visit changes it works out from them are the same however often it
//! is retried. A state already marked with the batch was saved by an earlier attempt,
//! after every bucket had the batch: that visitor is done.
//!
//! A worker killed anywhere loses nothing and counts nothing twice: the next owner redoes
//! the steps, and each finds its work done. A worker checks its lease in the database
//! before step 2 and renews it while it works, stops as soon as another has taken the
//! batch over, and sends a bucket update only while its lease holds. A worker that takes
//! the batch over changes the bucket's version before it can finish, so no stale update
//! lands after that. The batch document is deleted only by its current owner, and once it
//! is gone nobody can apply the batch again, so the next update of each bucket drops its
//! `applied` entry: buckets stay small however long the worker runs.
//!
//! Files, one concern each:
//! - `open`: client options, collections and indexes, and the install's secret;
//! - `queue`: enqueueing (the group-commit sink) and how full the queue is; `desk`
//!   records held batches ahead of need;
//! - `claim`: claims, leases and taking over a stopped worker's batch;
//! - `moves`: the steps above, and dead letters; `events` is how an event is stored;
//! - `visits`: locking, reading and saving visitors' visit states;
//! - `rollups`: the compare-and-set of one bucket;
//! - `stats`: reading buckets and raw events for `/stats`, and pages of events;
//! - `types`: each site's event types, so that buckets are read type by type;
//! - `salts`: the cookieless daily salts and the install's secret;
//! - `sites`: registered sites and their read keys;
//! - `rights`: erasing a user, retention, forgetting old salts;
//! - `codec`: documents to and from records, and error codes.

mod claim;
mod codec;
mod desk;
mod events;
mod moves;
mod open;
mod queue;
mod rights;
mod rollups;
mod salts;
mod sites;
mod stats;
mod types;
mod visits;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mongodb::Collection;
use mongodb::bson::Document;

use crate::group::Writer;
use crate::rollup::hash::Keys;
use crate::{Result, StoreError};

pub(crate) use claim::MongoClaim;

const EVENTS: &str = "events";
const SALTS: &str = "salts";
const ROLLUPS: &str = "rollups";
const BATCHES: &str = "batches";
const VALUES: &str = "values";
const DEAD_LETTERS: &str = "dead_letters";
const META: &str = "meta";
const SITES: &str = "sites";
const API_KEYS: &str = "api_keys";
const ERASURES: &str = "erasures";
const VISIT_STATES: &str = "visit_states";
const EVENT_TYPES: &str = "event_types";

/// A MongoDB database holding the queue and `events`.
#[derive(Debug, Clone)]
pub struct MongoStore {
    queue: Collection<Document>,
    events: Collection<Document>,
    salts: Collection<Document>,
    rollups: Collection<Document>,
    batches: Collection<Document>,
    /// The values dictionary: each value's text, by id.
    values: Collection<Document>,
    dead_letters: Collection<Document>,
    meta: Collection<Document>,
    sites: Collection<Document>,
    api_keys: Collection<Document>,
    /// Users erased lately, whose events a move must drop (see `rights`).
    erasures: Collection<Document>,
    /// Each visitor's visit so far, and which batch holds it (see `visits`).
    visit_states: Collection<Document>,
    /// Each site's event types (see `types`).
    event_types: Collection<Document>,
    /// The keys of user and value hashes, read from `meta` when the store gets ready.
    keys: Arc<OnceLock<Keys>>,
    /// Value ids known to be in the dictionary, so that a move need not ask. Cleared
    /// when full, to stay bounded.
    known_values: Arc<Mutex<HashSet<u64>>>,
    /// (site, type) ids known to be in `event_types`, bounded the same way.
    known_types: Arc<Mutex<HashSet<String>>>,
    description: Arc<str>,
    claim_lease: Duration,
    /// Set once collections and indexes exist. Until then writes are refused, so that no
    /// insert creates a collection implicitly while another client runs `createIndexes`
    /// (SecantusDB deadlocks on that race; mongod merely builds indexes on live data).
    ready: Arc<AtomicBool>,
    /// Group commit: the thread that writes the queue.
    writer: Writer<queue::QueueSink>,
    /// Batches this process moved lately, oldest first: their `applied` entries can go.
    finished: Arc<Mutex<VecDeque<String>>>,
    /// Claims that failed and could not hand back the batches they took (the database
    /// was away): the next claim hands them back (see `claim`).
    unreturned: Arc<Mutex<Vec<String>>>,
}

impl MongoStore {
    pub(crate) fn describe(&self) -> String {
        self.description.to_string()
    }

    fn check_ready(&self) -> Result<()> {
        check_ready(&self.ready)
    }

    /// The keys of user and value hashes, once the store is ready.
    pub(crate) fn hash_keys(&self) -> Result<Keys> {
        self.keys
            .get()
            .copied()
            .ok_or_else(|| StoreError::Unavailable("the store is not ready yet".to_owned()))
    }
}

/// Refuses writes until collections and indexes exist (see [`MongoStore::ready`]).
fn check_ready(ready: &AtomicBool) -> Result<()> {
    if ready.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            "collections and indexes are not created yet".to_owned(),
        ))
    }
}
