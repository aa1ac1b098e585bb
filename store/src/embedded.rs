//! The embedded backend: one SQLite file in `DATA_DIR`.
//!
//! The queue and `events` are tables keyed by event id. SQLite runs in WAL mode with full
//! sync, so an acknowledged enqueue survives a crash or power loss, and stats reads run
//! beside writes. Calls run on the blocking pool, one writer connection and one reader.
//! Moving a batch is one transaction: insert what is not yet in `events`, add exactly
//! those events to the rollups, delete from the queue.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::BTreeMap;

use beacon_protocol::{Stats, TimeRange};
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::rollup::{self, BucketKey, Counted, Piece, Rollup};
use crate::sketch::Sketch;

use crate::{
    ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreConfig, StoreError, from_millis, millis,
    new_claim_token,
};

const DB_FILE: &str = "beacon.db";
/// An inserted event's rollup fields: site, type, path, user, timestamp.
type CountedRow = (String, String, Option<String>, Option<String>, i64);
const EVENT_COLUMNS: &str =
    "event_id, site_id, event_type, path, user_id, timestamp, ingested_at, props";

/// A SQLite database in a data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    queue: String,
    claim_lease: Duration,
}

impl EmbeddedStore {
    pub(crate) async fn open(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let dir = data_dir.to_owned();
        let queue = config.queue_name.clone();
        let (writer, reader, path) = tokio::task::spawn_blocking(move || -> Result<_> {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            let path = dir.join(DB_FILE);
            let mut writer = connect(&path)?;
            create_schema(&writer, &queue)?;
            backfill_rollups(&mut writer)?;
            let reader = connect(&path)?;
            Ok((writer, reader, path))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            path,
            queue: config.queue_name.clone(),
            claim_lease: config.claim_lease,
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "embedded SQLite store at {} (queue `{}`)",
            self.path.display(),
            self.queue
        )
    }

    /// Runs `f` with a connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        connection: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let connection = Arc::clone(connection);
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call; SQLite rolled the transaction back,
            // so the connection itself is still sound.
            let mut conn = connection.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, &queue)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub(crate) async fn enqueue(&self, events: Vec<QueuedEvent>) -> Result<()> {
        self.with(&self.writer, move |conn, queue| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO \"{queue}\" ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(event_id) DO NOTHING"
                ))?;
                for e in &events {
                    insert.execute(params![
                        e.event_id.to_string(),
                        e.site_id,
                        e.event_type,
                        e.path,
                        e.user_id,
                        millis(e.timestamp),
                        millis(e.ingested_at),
                        e.props.as_ref().map(serde_json::to_string).transpose()
                            .map_err(|e| StoreError::Corrupt(format!("props: {e}")))?,
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn daily_salt(
        &self,
        day: &str,
        oldest_kept: &str,
        fresh: [u8; 32],
    ) -> Result<Vec<u8>> {
        let (day, oldest_kept) = (day.to_owned(), oldest_kept.to_owned());
        self.with(&self.writer, move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO salts (day, salt) VALUES (?1, ?2) ON CONFLICT(day) DO NOTHING",
                params![day, fresh.to_vec()],
            )?;
            let salt: Vec<u8> =
                tx.query_row("SELECT salt FROM salts WHERE day = ?1", [&day], |r| {
                    r.get(0)
                })?;
            tx.execute("DELETE FROM salts WHERE day < ?1", [&oldest_kept])?;
            tx.commit()?;
            Ok(salt)
        })
        .await
    }

    pub(crate) async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        let token = new_claim_token();
        let lease = i64::try_from(self.claim_lease.as_millis()).unwrap_or(i64::MAX);
        let claim_token = token.clone();
        let events = self
            .with(&self.writer, move |conn, queue| {
                let now = millis(Utc::now());
                let mut stmt = conn.prepare_cached(&format!(
                    "UPDATE \"{queue}\" SET claim = ?1, claimed_until = ?2
                     WHERE seq IN (SELECT seq FROM \"{queue}\" WHERE claimed_until < ?3
                                   ORDER BY seq LIMIT ?4)
                     RETURNING seq, {EVENT_COLUMNS}"
                ))?;
                let limit = i64::try_from(max).unwrap_or(i64::MAX);
                let mut rows = stmt
                    .query_map(
                        params![claim_token, now.saturating_add(lease), now, limit],
                        |row| Ok((row.get::<_, i64>(0)?, read_event(row, 1))),
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.sort_by_key(|(seq, _)| *seq);
                rows.into_iter().map(|(_, e)| e).collect::<Result<Vec<_>>>()
            })
            .await?;
        Ok(ClaimedBatch {
            owner: token.clone(),
            token,
            lease_ends: std::time::Instant::now() + self.claim_lease,
            events,
        })
    }

    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        let token = batch.token.clone();
        let claimed = batch.len();
        self.with(&self.writer, move |conn, queue| {
            let tx = conn.transaction()?;
            // RETURNING gives the events new to `events`: exactly those count.
            let inserted: Vec<CountedRow> = tx
                .prepare_cached(&format!(
                    "INSERT INTO events ({EVENT_COLUMNS}, processed_at)
                     SELECT {EVENT_COLUMNS}, ?2 FROM \"{queue}\" WHERE claim = ?1
                     ON CONFLICT(event_id) DO NOTHING
                     RETURNING site_id, event_type, path, user_id, timestamp"
                ))?
                .query_map(params![token, millis(Utc::now())], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            add_to_rollups(
                &tx,
                rollup::rollups_of(inserted.iter().map(
                    |(site_id, event_type, path, user_id, timestamp)| Counted {
                        site_id,
                        event_type,
                        path: path.as_deref(),
                        user_id: user_id.as_deref(),
                        timestamp: *timestamp,
                    },
                )),
            )?;
            let removed = tx.execute(
                &format!("DELETE FROM \"{queue}\" WHERE claim = ?1"),
                params![token],
            )?;
            tx.commit()?;
            if removed < claimed {
                tracing::warn!(
                    claimed,
                    removed,
                    "part of the batch was re-claimed by another worker after its lease ran out"
                );
            }
            Ok(MoveOutcome {
                inserted: inserted.len(),
                duplicates: removed - inserted.len(),
            })
        })
        .await
    }

    /// Merges the buckets that tile the range, and counts raw events only at its ragged
    /// ends (under an hour each).
    pub(crate) async fn stats(&self, range: &TimeRange) -> Result<Stats> {
        let range = range.clone();
        self.with(&self.reader, move |conn, _| {
            let tx = conn.transaction()?; // one snapshot for every piece
            let mut total = Rollup::default();
            let event_type = rollup::bucket_type(&range).to_owned();
            for piece in rollup::plan(&range) {
                match piece {
                    Piece::Buckets { granularity, from, to } => {
                        let args = params![
                            range.site_id,
                            granularity.code(),
                            event_type,
                            from.unwrap_or(i64::MIN),
                            to.unwrap_or(i64::MAX)
                        ];
                        let bucket_filter = "site_id = ?1 AND granularity = ?2 AND event_type = ?3
                                             AND start >= ?4 AND start < ?5";
                        let mut stmt = tx.prepare_cached(&format!(
                            "SELECT count, users FROM rollups WHERE {bucket_filter}"
                        ))?;
                        let mut rows = stmt.query(args)?;
                        while let Some(row) = rows.next()? {
                            total.count += u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
                            total.users.merge(&Sketch::from_bytes(&row.get::<_, Vec<u8>>(1)?)?);
                        }
                        let mut stmt = tx.prepare_cached(&format!(
                            "SELECT path, SUM(count) FROM rollup_paths WHERE {bucket_filter} GROUP BY path"
                        ))?;
                        let mut rows = stmt.query(args)?;
                        while let Some(row) = rows.next()? {
                            let n = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
                            *total.paths.entry(row.get(0)?).or_default() += n;
                        }
                    }
                    Piece::Raw { from, to } => {
                        let mut stmt = tx.prepare_cached(
                            "SELECT path, user_id FROM events WHERE site_id = ?1
                             AND timestamp >= ?2 AND timestamp < ?3
                             AND (?4 = '' OR event_type = ?4)",
                        )?;
                        let rows = stmt
                            .query_map(params![range.site_id, from, to, event_type], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        rollup::add_raw(&mut total, rows);
                    }
                }
            }
            Ok(total.into_stats(range.limit))
        })
        .await
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64> {
        self.with(&self.reader, |conn, queue| {
            let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{queue}\""), [], |r| {
                r.get(0)
            })?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    pub(crate) async fn event_ids(&self, site_id: &str) -> Result<Vec<Uuid>> {
        let site_id = site_id.to_owned();
        self.with(&self.reader, move |conn, _| {
            let mut stmt = conn.prepare("SELECT event_id FROM events WHERE site_id = ?1")?;
            let ids = stmt
                .query_map([site_id], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            ids.iter()
                .map(|s| {
                    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("event id {s}")))
                })
                .collect()
        })
        .await
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
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

fn create_schema(conn: &Connection, queue: &str) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{queue}\" (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id TEXT NOT NULL UNIQUE,
             site_id TEXT NOT NULL,
             event_type TEXT NOT NULL,
             path TEXT,
             user_id TEXT,
             timestamp INTEGER NOT NULL,
             ingested_at INTEGER NOT NULL,
             props TEXT,
             claim TEXT,
             claimed_until INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX IF NOT EXISTS \"{queue}_claim\" ON \"{queue}\" (claim);
         CREATE TABLE IF NOT EXISTS events (
             event_id TEXT PRIMARY KEY,
             site_id TEXT NOT NULL,
             event_type TEXT NOT NULL,
             path TEXT,
             user_id TEXT,
             timestamp INTEGER NOT NULL,
             ingested_at INTEGER NOT NULL,
             props TEXT,
             processed_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS events_site_time ON events (site_id, timestamp);
         CREATE TABLE IF NOT EXISTS salts (day TEXT PRIMARY KEY, salt BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS rollups (
             site_id TEXT NOT NULL,
             granularity TEXT NOT NULL,
             event_type TEXT NOT NULL,
             start INTEGER NOT NULL,
             count INTEGER NOT NULL,
             users BLOB NOT NULL,
             PRIMARY KEY (site_id, granularity, event_type, start)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS rollup_paths (
             site_id TEXT NOT NULL,
             granularity TEXT NOT NULL,
             event_type TEXT NOT NULL,
             start INTEGER NOT NULL,
             path TEXT NOT NULL,
             count INTEGER NOT NULL,
             PRIMARY KEY (site_id, granularity, event_type, start, path)
         ) WITHOUT ROWID;"
    ))?;
    Ok(())
}

/// Adds each bucket's rollup, inside the move's transaction.
fn add_to_rollups(tx: &Transaction<'_>, buckets: BTreeMap<BucketKey, Rollup>) -> Result<()> {
    for (key, delta) in buckets {
        let pk = params![
            key.site_id,
            key.granularity.code(),
            key.event_type,
            key.start
        ];
        let stored: Option<(i64, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT count, users FROM rollups
                 WHERE site_id = ?1 AND granularity = ?2 AND event_type = ?3 AND start = ?4",
            )?
            .query_row(pk, |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (count, mut users) = match stored {
            Some((count, users)) => (count, Sketch::from_bytes(&users)?),
            None => (0, Sketch::default()),
        };
        users.merge(&delta.users);
        let count = count.saturating_add(i64::try_from(delta.count).unwrap_or(i64::MAX));
        tx.prepare_cached(
            "INSERT OR REPLACE INTO rollups (site_id, granularity, event_type, start, count, users)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key.site_id,
            key.granularity.code(),
            key.event_type,
            key.start,
            count,
            users.to_bytes()
        ])?;
        let mut add_path = tx.prepare_cached(
            "INSERT INTO rollup_paths (site_id, granularity, event_type, start, path, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET count = count + excluded.count",
        )?;
        for (path, n) in delta.paths {
            add_path.execute(params![
                key.site_id,
                key.granularity.code(),
                key.event_type,
                key.start,
                path,
                i64::try_from(n).unwrap_or(i64::MAX)
            ])?;
        }
    }
    Ok(())
}

/// Builds the rollups of a database written before they existed, once, at open.
fn backfill_rollups(conn: &mut Connection) -> Result<()> {
    let has_rollups: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM rollups)", [], |r| r.get(0))?;
    let has_events: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))?;
    if has_rollups || !has_events {
        return Ok(());
    }
    tracing::info!("building rollups from existing events (once)");
    let tx = conn.transaction()?;
    let events = tx
        .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events"))?
        .query_map([], |row| Ok(read_event(row, 0)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    add_to_rollups(&tx, rollup::rollups_of(events.iter().map(Counted::from)))?;
    tx.commit()?;
    Ok(())
}

fn read_event(row: &rusqlite::Row<'_>, first: usize) -> Result<QueuedEvent> {
    let id: String = row.get(first)?;
    let props: Option<String> = row.get(first + 7)?;
    Ok(QueuedEvent {
        event_id: Uuid::parse_str(&id)
            .map_err(|_| StoreError::Corrupt(format!("event id {id}")))?,
        site_id: row.get(first + 1)?,
        event_type: row.get(first + 2)?,
        path: row.get(first + 3)?,
        user_id: row.get(first + 4)?,
        timestamp: from_millis(row.get(first + 5)?)?,
        ingested_at: from_millis(row.get(first + 6)?)?,
        props: props
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("props: {e}")))?,
    })
}
