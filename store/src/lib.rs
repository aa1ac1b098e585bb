//! Beacon's storage: the queue that the server writes, the `events` that the worker moves
//! it into, and the stats read from them, behind one API on two backends.
//!
//! Where each concern lives:
//! - [`Store`] (this file) is the whole API; which backend runs underneath is decided
//!   once, by [`StoreConfig`] (`config`), and nothing above this crate can tell.
//! - `record`: what crosses the API ([`QueuedEvent`], [`ClaimedBatch`], [`MoveOutcome`],
//!   [`EventsPage`]).
//! - `group`: group commit, for both backends. Concurrent enqueues are gathered on one
//!   writer thread per store and written together, so a busy server makes a few large
//!   durable writes instead of many small ones.
//! - `rollup`: backend-independent rollups: which buckets an event adds to
//!   (`rollup/mod.rs`), how a range splits into buckets and raw scans (`rollup/plan.rs`),
//!   and the unique-users sketch (`rollup/sketch.rs`).
//! - `stats`: assembles `/stats` from what a backend read for each piece of the plan.
//! - `query/`: the query API's engine, from rollups or raw events (`query/mod.rs`).
//! - `site`: registered sites and their read keys ([`Site`], [`ApiKey`]).
//! - `mongo/`: MongoDB, for production and scale-out. Any number of servers and workers
//!   share one database; claims with leases spread batches across workers, and a batch
//!   moves idempotently, without a multi-document transaction that a killed worker could
//!   leave open. One file per concern; `mongo/mod.rs` says which.
//! - `embedded/`: SQLite files in a data directory, for one machine without a database
//!   server. Each batch moves in one SQLite transaction. Laid out like `mongo/`.
//!
//! Exactly-once rests on the event id: it is the key of `events`, so enqueuing or moving
//! the same event twice stores it once, whatever crashed in between.

mod config;
mod embedded;
mod error;
mod group;
mod mongo;
mod query;
mod record;
mod rollup;
mod site;
mod stats;

use std::collections::HashMap;

use beacon_protocol::{Stats, TimeRange};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

pub use config::{Backend, DEFAULT_QUEUE_NAME, RESERVED_NAMES, StoreConfig, validate_queue_name};
pub use error::{Result, StoreError};
pub use query::Engine;
pub use record::{
    ClaimedBatch, Context, EventsPage, MoveOutcome, QueueStatus, QueuedEvent, Refusal,
};
pub use site::{ApiKey, Site};

/// The store. Cheap to clone; clones share connections and writer threads.
#[derive(Debug, Clone)]
pub struct Store(Backends);

#[derive(Debug, Clone)]
enum Backends {
    Mongo(mongo::MongoStore),
    Embedded(embedded::EmbeddedStore),
}

impl Store {
    /// Opens the store. MongoDB is connected lazily, so this succeeds while it is down;
    /// the embedded store creates its files and tables here.
    pub async fn open(config: StoreConfig) -> Result<Self> {
        validate_queue_name(&config.queue_name).map_err(StoreError::Config)?;
        Ok(Self(match &config.backend {
            Backend::Mongo { url } => Backends::Mongo(mongo::MongoStore::open(url, &config).await?),
            Backend::Embedded { data_dir } => {
                Backends::Embedded(embedded::EmbeddedStore::open(data_dir, &config).await?)
            }
        }))
    }

    /// Where the data lives, for the start-up log. Holds no credentials.
    pub fn describe(&self) -> String {
        match &self.0 {
            Backends::Mongo(s) => s.describe(),
            Backends::Embedded(s) => s.describe(),
        }
    }

    /// Creates collections and indexes, idempotently. Fails while the database is
    /// unreachable.
    pub async fn ensure_ready(&self) -> Result<()> {
        match &self.0 {
            Backends::Mongo(s) => s.ensure_ready().await,
            Backends::Embedded(_) => Ok(()),
        }
    }

    /// Durably queues events, sharing the write with concurrent calls (group commit).
    /// Returns once the database acknowledged the write, with the events it refused
    /// for good (by index; only MongoDB refuses single documents). An event sent twice
    /// is stored and counted once, whether the copy arrives while the first is queued
    /// or after it moved: `events` is keyed by event id.
    ///
    /// An error means nothing was stored: a write that cannot start before `deadline`
    /// is never started ([`StoreError::DeadlinePassed`]), and on MongoDB a write that
    /// failed or outlived the store's write timeout is never moved.
    pub async fn enqueue(
        &self,
        events: Vec<QueuedEvent>,
        deadline: std::time::Instant,
    ) -> Result<Vec<Refusal>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match &self.0 {
            Backends::Mongo(s) => s.enqueue(events, deadline).await,
            Backends::Embedded(s) => s.enqueue(events, deadline).await,
        }
    }

    /// Claims up to `max` of the oldest unclaimed queued events for this worker.
    pub async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        match &self.0 {
            Backends::Mongo(s) => s.claim(max).await,
            Backends::Embedded(s) => s.claim(max).await,
        }
    }

    /// Moves a claimed batch into `events` (stamping `processed_at`), adds what was new
    /// to the rollups, and removes the batch from the queue. Events already in `events`
    /// are not stored or counted again.
    pub async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        if batch.is_empty() {
            return Ok(MoveOutcome::default());
        }
        match &self.0 {
            Backends::Mongo(s) => s.move_batch(batch).await,
            Backends::Embedded(s) => s.move_batch(batch).await,
        }
    }

    /// Totals, unique users and top paths over processed events.
    pub async fn stats(&self, range: &TimeRange) -> Result<Stats> {
        let parts = match &self.0 {
            Backends::Mongo(s) => s.stats_parts(range).await?,
            Backends::Embedded(s) => s.stats_parts(range).await?,
        };
        let assembled = stats::assemble(parts, &self.hash_keys()?);
        let wanted = assembled.wanted_texts(range.limit);
        let texts = if wanted.is_empty() {
            HashMap::new()
        } else {
            self.value_texts(&wanted).await?
        };
        Ok(assembled.into_stats(range.limit, texts))
    }

    /// The rollup buckets `read` asks for.
    pub(crate) async fn buckets(
        &self,
        read: &rollup::BucketRead,
    ) -> Result<Vec<rollup::StoredBucket>> {
        match &self.0 {
            Backends::Mongo(s) => s.buckets(read).await,
            Backends::Embedded(s) => s.buckets(read).await,
        }
    }

    /// The texts of value ids, from the values dictionary.
    pub(crate) async fn value_texts(&self, ids: &[u64]) -> Result<HashMap<u64, String>> {
        match &self.0 {
            Backends::Mongo(s) => s.value_texts(ids).await,
            Backends::Embedded(s) => s.value_texts(ids).await,
        }
    }

    /// The keys of user and value hashes.
    pub(crate) fn hash_keys(&self) -> Result<rollup::hash::Keys> {
        match &self.0 {
            Backends::Mongo(s) => s.hash_keys(),
            Backends::Embedded(s) => s.hash_keys(),
        }
    }

    /// One page of a site's processed events, oldest first: the events after
    /// `page.after`, up to `page.limit` of them. Pages never load more than they return.
    pub async fn events_page(&self, page: &EventsPage) -> Result<Vec<QueuedEvent>> {
        match &self.0 {
            Backends::Mongo(s) => s.events_page(page).await,
            Backends::Embedded(s) => s.events_page(page).await,
        }
    }

    /// A site's processed events from `first` on, oldest first, in pages of at most
    /// `first.limit`, in one pass over the range: raw queries and exports read this.
    /// MongoDB reads it with one cursor, since secantusd-rs reads every match of a query
    /// whatever its limit, so that reading a range page by page cost the square of its
    /// length; SQLite reads it page by page, each page a range of its index.
    pub fn events(&self, first: EventsPage) -> BoxStream<'static, Result<Vec<QueuedEvent>>> {
        match &self.0 {
            Backends::Mongo(s) => s.events(first),
            Backends::Embedded(_) => {
                let store = self.clone();
                futures::stream::try_unfold(Some(first), move |page| {
                    let store = store.clone();
                    async move {
                        let Some(page) = page else {
                            return Ok(None);
                        };
                        let events = store.events_page(&page).await?;
                        let next = match events.last() {
                            Some(last) if events.len() == page.limit => Some(page.next(last)),
                            _ => None,
                        };
                        Ok(Some((events, next)))
                    }
                })
                .try_filter(|events| futures::future::ready(!events.is_empty()))
                .boxed()
            }
        }
    }

    /// Events the database refused for good, kept in `dead_letters` with the error.
    pub async fn dead_letters(&self) -> Result<u64> {
        match &self.0 {
            Backends::Mongo(s) => s.dead_letters().await,
            Backends::Embedded(s) => s.dead_letters().await,
        }
    }

    /// Events waiting in the queue, claimed or not, and when the oldest arrived. Cheap:
    /// no scan of the queue.
    pub async fn queue_status(&self) -> Result<QueueStatus> {
        match &self.0 {
            Backends::Mongo(s) => s.queue_status().await,
            Backends::Embedded(s) => s.queue_status().await,
        }
    }

    /// Events waiting in the queue, claimed or not.
    pub async fn queue_depth(&self) -> Result<u64> {
        Ok(self.queue_status().await?.depth)
    }

    /// The secret salt for `day` (UTC), shared by every server: `fresh` is stored if the
    /// day has none yet, and whichever was stored first is returned. Salts of days
    /// before `day - 1` are deleted, so that old anonymous ids can no longer be
    /// recomputed from IP and user agent.
    pub async fn daily_salt(&self, day: chrono::NaiveDate, fresh: [u8; 32]) -> Result<Vec<u8>> {
        let key = day.format("%Y-%m-%d").to_string();
        let oldest_kept = day.pred_opt().unwrap_or(day).format("%Y-%m-%d").to_string();
        match &self.0 {
            Backends::Mongo(s) => s.daily_salt(&key, &oldest_kept, fresh).await,
            Backends::Embedded(s) => s.daily_salt(&key, &oldest_kept, fresh).await,
        }
    }
}

/// Sites, keys and data rights: each call runs on whichever backend the store is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.0 {
            Backends::Mongo(s) => s.$method($($arg),*).await,
            Backends::Embedded(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Registers `site`; false if its id is taken.
    pub async fn create_site(&self, site: &Site) -> Result<bool> {
        dispatch!(self.create_site(site))
    }

    /// Every registered site, by id.
    pub async fn sites(&self) -> Result<Vec<Site>> {
        dispatch!(self.sites())
    }

    /// The ids of sites with processed events, in order, at most `limit` (anyone may
    /// send events for any site id in open mode, so the list is cut off).
    pub async fn sites_with_events(&self, limit: usize) -> Result<Vec<String>> {
        dispatch!(self.sites_with_events(limit))
    }

    /// One site, if registered.
    pub async fn site(&self, site_id: &str) -> Result<Option<Site>> {
        dispatch!(self.site(site_id))
    }

    /// Replaces a registered site's domains and time zone; false if it is not registered.
    pub async fn update_site(&self, site: &Site) -> Result<bool> {
        dispatch!(self.update_site(site))
    }

    /// Unregisters a site and revokes its keys; its events stay. False if it was not
    /// registered.
    pub async fn delete_site(&self, site_id: &str) -> Result<bool> {
        dispatch!(self.delete_site(site_id))
    }

    /// Stores a read key (its hash).
    pub async fn create_key(&self, key: &ApiKey) -> Result<()> {
        dispatch!(self.create_key(key))
    }

    /// A site's keys, oldest first.
    pub async fn keys(&self, site_id: &str) -> Result<Vec<ApiKey>> {
        dispatch!(self.keys(site_id))
    }

    /// A key by its id. Always read from the database, so that a revocation holds at
    /// once on every server.
    pub async fn key(&self, key_id: &str) -> Result<Option<ApiKey>> {
        dispatch!(self.key(key_id))
    }

    /// Deletes a site's key; false if it had no such key.
    pub async fn revoke_key(&self, site_id: &str, key_id: &str) -> Result<bool> {
        dispatch!(self.revoke_key(site_id, key_id))
    }

    /// Records that a key was used at `at`.
    pub async fn touch_key(&self, key_id: &str, at: chrono::DateTime<chrono::Utc>) -> Result<()> {
        dispatch!(self.touch_key(key_id, at))
    }

    /// Deletes a user's events of a site, queued and stored, and answers how many. What
    /// was added to rollups stays: counts, and the user's keyed hash in the sketches.
    pub async fn erase_user(&self, site_id: &str, user_id: &str) -> Result<u64> {
        dispatch!(self.erase_user(site_id, user_id))
    }

    /// Finishes erasures whose every possible move in flight is over (MongoDB; nothing
    /// to do on the embedded store). The worker calls it now and then.
    pub async fn settle_erasures(&self) -> Result<()> {
        match &self.0 {
            Backends::Mongo(s) => s.settle_erasures().await,
            Backends::Embedded(_) => Ok(()),
        }
    }

    /// Deletes up to `limit` raw events older than `before`; answers how many. Rollups
    /// stay.
    pub async fn expire_events(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        dispatch!(self.expire_events(before, limit))
    }

    /// Deletes the visit states of visitors not seen since `before`: their visits are
    /// over, and an event that old starts a visit of its own anyway.
    pub async fn forget_visits(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let before = millis(before);
        dispatch!(self.forget_visits(before))
    }

    /// Deletes the cookieless salts of days before `oldest_kept`.
    pub async fn forget_salts(&self, oldest_kept: chrono::NaiveDate) -> Result<()> {
        let day = oldest_kept.format("%Y-%m-%d").to_string();
        dispatch!(self.forget_salts(&day))
    }
}

/// Locks `mutex`, even if a thread panicked while holding it. Every mutex in this crate
/// guards state that stays valid after such a panic: plain data updated in single
/// steps, or a SQLite connection whose transaction was rolled back.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fresh claim token: unique per claim, so a worker only ever acts on its own claims.
fn new_claim_token() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the epoch: the unit both backends store times in.
fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}
