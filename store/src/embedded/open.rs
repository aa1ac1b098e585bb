//! Opening the data directory: connections, pragmas and the schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, params};

use super::codec::CONTEXT_FIELDS;
use super::queue::queue_inserts;
use super::{DB_FILE, EmbeddedStore, QUEUE_FILE, Readers, SqliteFile};
use super::{events, upgrade};
use crate::group::Writer;
use crate::rollup::EXTRA_NAMES;
use crate::rollup::hash::{self, Keys};
use crate::{Result, StoreConfig, StoreError};

/// Read connections: stats, health and claims each take one, so none waits on another.
const READERS: u32 = 4;
/// Longest wait for a free read connection.
const READER_WAIT: Duration = Duration::from_secs(5);

impl EmbeddedStore {
    /// Creates the directory, files and tables if missing, and starts the writer threads.
    pub(crate) async fn open(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let dir = data_dir.to_owned();
        let queue = config.queue_name.clone();
        let (writer, queue_writer, readers, path, keys) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                let queue_path = dir.join(QUEUE_FILE);
                let queue_writer = connect(&queue_path)?;
                give_space_back(&queue_writer)?;
                create_queue_table(&queue_writer, &queue)?;
                let path = dir.join(DB_FILE);
                let mut writer = connect(&path)?;
                give_space_back(&writer)?;
                create_schema(&writer)?;
                upgrade::upgrade(&mut writer)?;
                attach_queue(&writer, &queue_path)?;
                let keys = install_keys(&writer)?;
                let readers = readers(path.clone(), queue_path)?;
                Ok((writer, queue_writer, readers, path, keys))
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let queue: Arc<str> = config.queue_name.as_str().into();
        let file = |conn| SqliteFile {
            conn,
            queue: Arc::clone(&queue),
            texts: Default::default(),
            inserts: queue_inserts(&queue),
            visits: Default::default(),
            moved_at: 0,
        };
        Ok(Self {
            writer: Writer::start("beacon-events", file(writer))?,
            queue_writer: Writer::start("beacon-queue", file(queue_writer))?,
            readers,
            keys,
            claims: Arc::default(),
            deleting: Arc::default(),
            path: path.into(),
            queue: Arc::clone(&queue),
            claim_lease: config.claim_lease,
        })
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL lets stats read while the worker writes; FULL makes every commit durable.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite did not switch to WAL mode");
    }
    // After a checkpoint, a WAL that grew past this is cut back to it.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA journal_size_limit = 8388608;",
    )?;
    Ok(conn)
}

/// Lets a file shrink (see [`shrink`]): incremental auto-vacuum, set on a new file, or
/// by one `VACUUM` on a file made before it.
fn give_space_back(conn: &Connection) -> Result<()> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode != INCREMENTAL {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    }
    Ok(())
}

/// Free pages a file keeps for what it will write next: 4 MiB, so that a queue that
/// fills and drains all day does not shrink and grow its file at every batch.
const FREE_PAGES_KEPT: i64 = 1024;

/// Gives a file's free pages past [`FREE_PAGES_KEPT`] back to the file system: the
/// queue's after a move, `beacon.db`'s after the worker's sweeps delete visit states or
/// expired events.
pub(super) fn shrink(conn: &Connection) -> Result<()> {
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if free > FREE_PAGES_KEPT {
        // Each step frees one page (as a row without columns): step to the end.
        let mut vacuum = conn.prepare(&format!(
            "PRAGMA incremental_vacuum({})",
            free - FREE_PAGES_KEPT
        ))?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
    }
    Ok(())
}

/// `PRAGMA auto_vacuum`'s value for incremental.
const INCREMENTAL: i64 = 2;

/// The columns after `event_id` that the queue and `events` share.
const EVENT_FIELDS: &str = "site_id TEXT NOT NULL, event_type TEXT NOT NULL, path TEXT, \
     user_id TEXT, timestamp INTEGER NOT NULL, ingested_at INTEGER NOT NULL, props TEXT";

/// The queue, in `queue.db`, and its count of rows. No unique index on `event_id`: a
/// copy sent twice is dropped when moved, as `events` is keyed by it. Claims are kept in
/// memory.
fn create_queue_table(conn: &Connection, queue: &str) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{queue}\" (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id TEXT NOT NULL,
             {EVENT_FIELDS}, {CONTEXT_FIELDS}, continues TEXT
         );
         CREATE TABLE IF NOT EXISTS queue_counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
         INSERT OR IGNORE INTO queue_counts (name, n) SELECT '{queue}', COUNT(*) FROM \"{queue}\";"
    ))?;
    add_missing_columns(conn, queue, &format!("{CONTEXT_FIELDS}, continues TEXT"))
}

/// Adds the columns of `declarations` (`name TYPE …, …`) that `table` lacks: a store
/// made by an earlier version gains them, empty (or at their default), when opened.
fn add_missing_columns(conn: &Connection, table: &str, declarations: &str) -> Result<()> {
    let existing: Vec<String> = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for declaration in declarations.split(',').map(str::trim) {
        let name = declaration.split_whitespace().next().unwrap_or_default();
        if !existing.iter().any(|e| e == name) {
            conn.execute_batch(&format!("ALTER TABLE \"{table}\" ADD COLUMN {declaration}"))?;
        }
    }
    Ok(())
}

/// A pool of connections to `beacon.db` with `queue.db` attached, for reads.
fn readers(path: PathBuf, queue_path: PathBuf) -> Result<Readers> {
    let manager = SqliteConnectionManager::file(path).with_init(move |conn| {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute("ATTACH DATABASE ?1 AS q", [queue_path.to_string_lossy()])?;
        Ok(())
    });
    r2d2::Pool::builder()
        .max_size(READERS)
        .min_idle(Some(1))
        .connection_timeout(READER_WAIT)
        .build(manager)
        .map_err(|e| StoreError::Task(format!("cannot open read connections: {e}")))
}

/// The install's secret, created on first open: the keys of its hashes.
fn install_keys(conn: &Connection) -> Result<Keys> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('install_secret', ?1)",
        params![hash::new_secret().to_vec()],
    )?;
    let stored: Vec<u8> = conn.query_row(
        "SELECT value FROM meta WHERE key = 'install_secret'",
        [],
        |r| r.get(0),
    )?;
    Ok(Keys::from_secret(&hash::secret_from_bytes(&stored)?))
}

/// Makes `queue.db` readable as `q` from a `beacon.db` connection.
fn attach_queue(conn: &Connection, queue_path: &Path) -> Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS q", [queue_path.to_string_lossy()])?;
    conn.execute_batch("PRAGMA q.synchronous = FULL;")?;
    Ok(())
}

/// `events`, the salts, the rollups, visitors' visit states, the values dictionary,
/// dead letters, the install's secret, and the registered sites and their keys, in
/// `beacon.db`.
fn create_schema(conn: &Connection) -> Result<()> {
    let extras = rollup_extras();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS salts (day TEXT PRIMARY KEY, salt BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS rollups (
             site_id TEXT NOT NULL,
             granularity TEXT NOT NULL,
             event_type TEXT NOT NULL,
             start INTEGER NOT NULL,
             count INTEGER NOT NULL,
             users BLOB NOT NULL,
             {extras},
             PRIMARY KEY (site_id, granularity, event_type, start)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS visits (
             site_id TEXT NOT NULL,
             user_id TEXT NOT NULL,
             state BLOB NOT NULL,
             last INTEGER NOT NULL,
             PRIMARY KEY (site_id, user_id)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS visits_last ON visits (last);
         CREATE TABLE IF NOT EXISTS rollup_dims (
             site_id TEXT NOT NULL,
             granularity TEXT NOT NULL,
             event_type TEXT NOT NULL,
             start INTEGER NOT NULL,
             dim TEXT NOT NULL,
             summary BLOB NOT NULL,
             PRIMARY KEY (site_id, granularity, event_type, start, dim)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS dict (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS dead_letters (
             event_id TEXT PRIMARY KEY,
             {EVENT_FIELDS}, {CONTEXT_FIELDS},
             error TEXT NOT NULL,
             failed_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS sites (
             site_id TEXT PRIMARY KEY,
             domains TEXT NOT NULL,
             timezone TEXT NOT NULL,
             created_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS api_keys (
             key_id TEXT PRIMARY KEY,
             site_id TEXT NOT NULL,
             hash BLOB NOT NULL,
             created_at INTEGER NOT NULL,
             last_used_at INTEGER
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS api_keys_site ON api_keys (site_id);"
    ))?;
    // A store of the first layout keeps its `events` until `upgrade::upgrade`.
    if upgrade::layout(conn)? == upgrade::Layout::First {
        add_missing_columns(conn, "events", CONTEXT_FIELDS)?;
    } else {
        conn.execute_batch(events::SCHEMA)?;
    }
    add_missing_columns(conn, "dead_letters", CONTEXT_FIELDS)?;
    add_missing_columns(conn, "rollups", &extras)
}

/// The declarations of a bucket's side counters' columns in `rollups`.
fn rollup_extras() -> String {
    EXTRA_NAMES
        .map(|name| format!("{name} INTEGER NOT NULL DEFAULT 0"))
        .join(", ")
}
