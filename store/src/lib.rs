//! Beacon's storage: the queue that the server writes, the `events` that the worker moves
//! it into, and the stats read from them, behind one API on two backends.
//!
//! - [`Store`] is the API. Which backend it runs on is decided once, by [`StoreConfig`],
//!   and nothing above this crate can tell the difference.
//! - `mongo`: MongoDB, for production and scale-out. Any number of servers and workers
//!   share one database; claims with leases spread batches across workers, and a batch
//!   moves idempotently, without a multi-document transaction that a killed worker could
//!   leave open.
//! - `embedded`: SQLite files in a data directory, for running on a single machine
//!   without a database server. Each batch moves in one SQLite transaction.
//! - [`QueuedEvent`], [`ClaimedBatch`], [`MoveOutcome`]: the records that cross the API.
//!
//! Exactly-once rests on the event id: it is the key of the queue and of `events`, so
//! enqueuing or moving the same event twice stores it once, whatever crashed in between.

mod embedded;
mod error;
mod mongo;
mod record;
pub mod rollup;
pub mod sketch;

use std::path::PathBuf;
use std::time::Duration;

use beacon_protocol::{Stats, TimeRange};

pub use error::{Result, StoreError};
pub use record::{ClaimedBatch, MoveOutcome, QueuedEvent};

/// Which database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A MongoDB deployment; the database is the URL's path.
    Mongo {
        /// The connection string. It may hold a password: never log it.
        url: String,
    },
    /// A SQLite file inside this directory.
    Embedded {
        /// Created if missing.
        data_dir: PathBuf,
    },
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend.
    pub backend: Backend,
    /// The queue's collection (or table) name, the seed's `QUEUE_NAME`.
    pub queue_name: String,
    /// How long a worker's claim on a batch lasts before another worker may take it over.
    pub claim_lease: Duration,
}

impl StoreConfig {
    /// The defaults for `backend`: queue `events_queue`, 30 s claim lease.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            queue_name: DEFAULT_QUEUE_NAME.to_owned(),
            claim_lease: Duration::from_secs(30),
        }
    }
}

/// The seed's queue collection name.
pub const DEFAULT_QUEUE_NAME: &str = "events_queue";

/// Checks a queue name: it becomes a collection or table name, so only plain identifiers.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "events";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1 to 64 letters, digits or underscores, and not `events`"
        ))
    }
}

/// The store. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub enum Store {
    /// MongoDB.
    Mongo(mongo::MongoStore),
    /// SQLite in a data directory.
    Embedded(embedded::EmbeddedStore),
}

impl Store {
    /// Opens the store. MongoDB is connected lazily, so this succeeds while it is down;
    /// the embedded store creates its file and tables here.
    pub async fn open(config: StoreConfig) -> Result<Self> {
        validate_queue_name(&config.queue_name).map_err(StoreError::Config)?;
        Ok(match &config.backend {
            Backend::Mongo { url } => Self::Mongo(mongo::MongoStore::open(url, &config).await?),
            Backend::Embedded { data_dir } => {
                Self::Embedded(embedded::EmbeddedStore::open(data_dir, &config).await?)
            }
        })
    }

    /// Where the data lives, for the start-up log. Holds no credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Mongo(s) => s.describe(),
            Self::Embedded(s) => s.describe(),
        }
    }

    /// Whether several processes may share this store (MongoDB), as opposed to one
    /// process owning it (embedded).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Mongo(_))
    }

    /// Creates indexes, idempotently. Fails while the database is unreachable.
    pub async fn ensure_ready(&self) -> Result<()> {
        match self {
            Self::Mongo(s) => s.ensure_ready().await,
            Self::Embedded(_) => Ok(()),
        }
    }

    /// Durably queues events. Returns once the database acknowledged the write. An event
    /// sent twice is stored and counted once, whether the copy arrives while the first
    /// is queued or after it moved: `events` is keyed by event id.
    /// Takes the events by value: the embedded backend hands them to a blocking thread.
    pub async fn enqueue(&self, events: Vec<QueuedEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        match self {
            Self::Mongo(s) => s.enqueue(&events).await,
            Self::Embedded(s) => s.enqueue(events).await,
        }
    }

    /// Returns once everything this process queued is claimable by workers. `enqueue`
    /// returns once events are durable; on MongoDB they become claimable a moment
    /// later, when their batch is released in the background (or, if this process
    /// dies first, when that batch's lease runs out). The server calls this when it
    /// shuts down.
    pub async fn settle(&self) {
        if let Self::Mongo(s) = self {
            s.settle().await;
        }
    }

    /// Claims up to `max` of the oldest unclaimed queued events for this worker.
    pub async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        match self {
            Self::Mongo(s) => s.claim(max).await,
            Self::Embedded(s) => s.claim(max).await,
        }
    }

    /// Moves a claimed batch into `events` (stamping `processed_at`) and removes it from the
    /// queue, atomically. Events already in `events` are not stored or counted again.
    pub async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        if batch.is_empty() {
            return Ok(MoveOutcome::default());
        }
        match self {
            Self::Mongo(s) => s.move_batch(batch).await,
            Self::Embedded(s) => s.move_batch(batch).await,
        }
    }

    /// Totals, unique users and top paths over processed events.
    pub async fn stats(&self, range: &TimeRange) -> Result<Stats> {
        match self {
            Self::Mongo(s) => s.stats(range).await,
            Self::Embedded(s) => s.stats(range).await,
        }
    }

    /// Events waiting in the queue, claimed or not.
    pub async fn queue_depth(&self) -> Result<u64> {
        match self {
            Self::Mongo(s) => s.queue_depth().await,
            Self::Embedded(s) => s.queue_depth().await,
        }
    }

    /// The secret salt for `day` (UTC), shared by every server: `fresh` is stored if the
    /// day has none yet, and whichever was stored first is returned. Salts of days
    /// before `day - 1` are deleted, so that old anonymous ids can no longer be
    /// recomputed from IP and user agent.
    pub async fn daily_salt(&self, day: chrono::NaiveDate, fresh: [u8; 32]) -> Result<Vec<u8>> {
        let key = day.format("%Y-%m-%d").to_string();
        let oldest_kept = day.pred_opt().unwrap_or(day).format("%Y-%m-%d").to_string();
        match self {
            Self::Mongo(s) => s.daily_salt(&key, &oldest_kept, fresh).await,
            Self::Embedded(s) => s.daily_salt(&key, &oldest_kept, fresh).await,
        }
    }

    /// Processed events for one site, for tests and checks that must see raw rows.
    pub async fn event_ids(&self, site_id: &str) -> Result<Vec<uuid::Uuid>> {
        match self {
            Self::Mongo(s) => s.event_ids(site_id).await,
            Self::Embedded(s) => s.event_ids(site_id).await,
        }
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
