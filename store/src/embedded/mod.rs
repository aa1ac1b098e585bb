//! The embedded backend: two SQLite files in `DATA_DIR`.
//!
//! `queue.db` holds the queue; `beacon.db` holds `events` (keyed by event id), the
//! rollups and the salts. SQLite runs in WAL mode with full sync, so an acknowledged
//! enqueue survives a crash or power loss, and stats reads run beside writes. Each file
//! has its own writer thread (`crate::group`), so enqueues never wait on the worker's
//! moves, and the queue's thread commits concurrent enqueues together. Reads run on the
//! blocking pool with a small pool of connections, which see the queue as `q`: stats,
//! health and the worker's claims never wait on one another (WAL allows many readers).
//!
//! A claim is a range of queue rows, held in memory: one process owns the files. Moving
//! a batch is one transaction in `beacon.db` (insert what is not yet in `events`, add
//! exactly those events to the rollups), then deleting the range from the queue, which
//! goes on while the next move runs.
//!
//! Files, one concern each:
//! - `open`: connections, pragmas and the schema;
//! - `queue`: enqueueing (the group-commit sink), claims and the queue's depth;
//! - `events`: how `events` stores an event (compactly);
//! - `moves`: moving a claimed range into `events`;
//! - `rollups`: adding a batch to its buckets;
//! - `stats`: reading buckets and raw events for `/stats`, and pages of events;
//! - `salts`: the cookieless daily salts;
//! - `sites`: registered sites and their read keys;
//! - `rights`: erasing a user, retention, forgetting old salts;
//! - `codec`: records to and from rows.

mod bounded;
mod codec;
mod events;
mod moves;
mod open;
mod queue;
mod rights;
mod rollups;
mod salts;
mod sites;
mod stats;
mod texts;
mod upgrade;
mod visits;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::group::Writer;
use crate::rollup::hash::Keys;
use crate::{Result, StoreError};

/// Read connections to `beacon.db`, with `queue.db` attached as `q`.
type Readers = r2d2::Pool<SqliteConnectionManager>;

pub(crate) use queue::EmbeddedClaim;

/// `events`, the rollups and the salts.
const DB_FILE: &str = "beacon.db";
/// The queue, in a file of its own so that enqueues never wait on the worker's writes.
const QUEUE_FILE: &str = "queue.db";

/// A SQLite database in a data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    /// Writes `beacon.db`: moves and salts.
    writer: Writer<SqliteFile>,
    /// Writes `queue.db`: enqueues (group commit), and deleting moved rows.
    queue_writer: Writer<SqliteFile>,
    /// Reads `beacon.db`, with `queue.db` attached as `q`.
    readers: Readers,
    /// The keys of user and value hashes.
    keys: Keys,
    /// Live claims by token.
    claims: Arc<Mutex<HashMap<String, queue::RangeClaim>>>,
    /// The last move's delete of its rows from the queue, while it runs (see `moves`).
    deleting: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    // Shared, not copied: the server clones the store for every request.
    path: Arc<Path>,
    queue: Arc<str>,
    claim_lease: Duration,
}

/// A file's one write connection, owned by its writer thread, and the queue's table.
#[derive(Debug)]
pub(crate) struct SqliteFile {
    conn: Connection,
    queue: Arc<str>,
    /// The ids of `texts` (`beacon.db`'s writer only).
    texts: texts::Texts,
    /// The queue's inserts (`queue.db`'s writer only).
    inserts: codec::Inserts,
    /// The visit states last committed (`beacon.db`'s writer only).
    visits: visits::Cache,
    /// When the last move was (`beacon.db`'s writer only): each is later than the one
    /// before, even when the clock is set back.
    moved_at: i64,
}

impl EmbeddedStore {
    pub(crate) fn describe(&self) -> String {
        format!(
            "embedded SQLite store at {} (queue `{}`)",
            self.path.display(),
            self.queue
        )
    }

    /// Runs `f` on `beacon.db`'s writer thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer
            .run(move |file| f(&mut file.conn, &file.queue))
            .await
    }

    /// Runs `f` with a read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = readers
                .get()
                .map_err(|e| StoreError::Unavailable(format!("no free read connection: {e}")))?;
            f(&mut conn, &queue)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub(crate) fn hash_keys(&self) -> Result<Keys> {
        Ok(self.keys)
    }
}
