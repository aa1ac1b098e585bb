//! The embedded backend: two SQLite files in `DATA_DIR`.
//!
//! `queue.db` holds the queue; `beacon.db` holds `events` (keyed by event id), the
//! rollups and the salts. SQLite runs in WAL mode with full sync, so an acknowledged
//! enqueue survives a crash or power loss, and stats reads run beside writes. Each file
//! has its own writer thread (`writer`), so enqueues never wait on the worker's moves,
//! and the queue's thread commits concurrent enqueues together. Reads run on the
//! blocking pool with a third connection, which sees the queue as `q`.
//!
//! A claim is a range of queue rows, held in memory. Moving a batch is one transaction
//! in `beacon.db` (insert what is not yet in `events`, add exactly those events to the
//! rollups), then deleting the range from the queue.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap};

use beacon_protocol::{Stats, TimeRange};
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

mod writer;

use writer::Writer;

use crate::rollup::{self, BucketKey, Counted, Piece, Rollup};
use crate::sketch::Sketch;

use crate::{
    ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreConfig, StoreError, from_millis, lock,
    millis, new_claim_token,
};

/// `events`, the rollups and the salts.
const DB_FILE: &str = "beacon.db";
/// The queue, in a file of its own so that enqueues never wait on the worker's writes.
const QUEUE_FILE: &str = "queue.db";
/// An inserted event's rollup fields: site, type, path, user, timestamp.
type CountedRow = (String, String, Option<String>, Option<String>, i64);
const EVENT_COLUMNS: &str =
    "event_id, site_id, event_type, path, user_id, timestamp, ingested_at, props";

/// A worker's claim: queue rows `first..=last` (by `seq`), until its lease ends.
#[derive(Debug)]
struct RangeClaim {
    first: i64,
    last: i64,
    until: Instant,
}

/// A SQLite database in a data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    /// Writes `beacon.db`: moves and salts.
    writer: Writer,
    /// Writes `queue.db`: enqueues, and deleting moved rows.
    queue_writer: Writer,
    /// Reads `beacon.db`, with `queue.db` attached as `q`.
    reader: Arc<Mutex<Connection>>,
    /// Live claims by token.
    claims: Arc<Mutex<HashMap<String, RangeClaim>>>,
    // Shared, not copied: the server clones the store for every request.
    path: Arc<Path>,
    queue: Arc<str>,
    claim_lease: Duration,
}

impl EmbeddedStore {
    pub(crate) async fn open(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let dir = data_dir.to_owned();
        let queue = config.queue_name.clone();
        let (writer, queue_writer, reader, path) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                let queue_path = dir.join(QUEUE_FILE);
                let queue_writer = connect(&queue_path)?;
                create_queue_table(&queue_writer, &queue)?;
                let path = dir.join(DB_FILE);
                let mut writer = connect(&path)?;
                create_schema(&writer)?;
                attach_queue(&writer, &queue_path)?;
                move_old_queue(&mut writer, &queue)?;
                backfill_rollups(&mut writer)?;
                let reader = connect(&path)?;
                attach_queue(&reader, &queue_path)?;
                Ok((writer, queue_writer, reader, path))
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let queue = &config.queue_name;
        Ok(Self {
            writer: Writer::start("beacon-events", writer, queue.clone())?,
            queue_writer: Writer::start("beacon-queue", queue_writer, queue.clone())?,
            reader: Arc::new(Mutex::new(reader)),
            claims: Arc::default(),
            path: path.into(),
            queue: config.queue_name.as_str().into(),
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

    /// Runs `f` on `beacon.db`'s writer thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let queue = self.queue.clone();
        self.writer.run(move |conn| f(conn, &queue)).await
    }

    /// Runs `f` with the read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let connection = Arc::clone(&self.reader);
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&connection);
            f(&mut conn, &queue)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub(crate) async fn enqueue(&self, events: Vec<QueuedEvent>) -> Result<()> {
        self.queue_writer.enqueue(events).await
    }

    pub(crate) async fn daily_salt(
        &self,
        day: &str,
        oldest_kept: &str,
        fresh: [u8; 32],
    ) -> Result<Vec<u8>> {
        let (day, oldest_kept) = (day.to_owned(), oldest_kept.to_owned());
        self.write(move |conn, _| {
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

    /// Claims the oldest unclaimed events: a range of queue rows above every live
    /// claim, or a live claim whose lease ran out, taken over whole. Claims live in
    /// memory: one process owns the file, and after a restart every queued event is
    /// unclaimed again, which is safe because moving is idempotent. Claiming is then a
    /// read, and costs the writer nothing.
    pub(crate) async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        let token = new_claim_token();
        let claims = Arc::clone(&self.claims);
        let lease = self.claim_lease;
        let claim_token = token.clone();
        let events = self
            .read(move |conn, queue| {
                // Held while reading, so that two claims cannot pick the same rows.
                let mut claims = lock(&claims);
                let now = Instant::now();
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT seq, {EVENT_COLUMNS} FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2
                     ORDER BY seq LIMIT ?3"
                ))?;
                let rows = loop {
                    let expired = claims.iter().find(|(_, c)| c.until <= now);
                    let expired = expired.map(|(token, _)| token.clone());
                    let taken_over = expired.and_then(|token| claims.remove(&token));
                    let (first, last, limit) = match &taken_over {
                        Some(old) => (old.first, old.last, i64::MAX),
                        None => {
                            let above = claims.values().map(|c| c.last).max().unwrap_or(0);
                            let limit = i64::try_from(max).unwrap_or(i64::MAX);
                            (above.saturating_add(1), i64::MAX, limit)
                        }
                    };
                    let rows = stmt
                        .query_map(params![first, last, limit], |row| {
                            Ok((row.get::<_, i64>(0)?, read_event(row, 1)))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    // An expired claim whose rows are all moved is just dropped.
                    if !(rows.is_empty() && taken_over.is_some()) {
                        break rows;
                    }
                };
                if let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) {
                    let claim = RangeClaim {
                        first: *first,
                        last: *last,
                        until: now + lease,
                    };
                    claims.insert(claim_token, claim);
                }
                rows.into_iter().map(|(_, e)| e).collect::<Result<Vec<_>>>()
            })
            .await?;
        Ok(ClaimedBatch {
            members: Vec::new(),
            owner: token.clone(),
            token,
            lease_ends: std::time::Instant::now() + self.claim_lease,
            more_waiting: events.len() >= max,
            events,
        })
    }

    /// Moves a claimed range: one transaction in `beacon.db` inserts the events new to
    /// `events` and adds exactly those to the rollups; then the range is deleted from
    /// `queue.db`. A crash between the two leaves the rows queued, and moving them again
    /// inserts and counts nothing. A batch whose claim is gone (moved already, or taken
    /// over by another worker after its lease) has nothing to do.
    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        let claimed = batch.len();
        let range = lock(&self.claims)
            .get(&batch.token)
            .map(|c| (c.first, c.last));
        let Some((first, last)) = range else {
            return Ok(MoveOutcome::default());
        };
        // Usually every claimed event is new: their rollups are worked out here, off the
        // writer thread, and the insert need not say which rows it added.
        let claimed_rollups = rollup::rollups_of(batch.events.iter().map(Counted::from));
        let inserted = self
            .write(move |conn, queue| {
                let mut tx = conn.transaction()?;
                let attempt = tx.savepoint()?;
                let n = attempt
                    .prepare_cached(&insert_from_queue(queue, ""))?
                    .execute(params![first, last, millis(Utc::now())])?;
                // The range holds at most the claimed rows (rows only ever leave it), so
                // inserting as many means every claimed event was new.
                let inserted = if n == claimed {
                    attempt.commit()?;
                    add_to_rollups(&tx, claimed_rollups)?;
                    claimed
                } else {
                    drop(attempt); // rolls the attempt back
                    insert_new_and_count(&tx, queue, first, last)?
                };
                tx.commit()?;
                Ok(inserted)
            })
            .await?;
        let queue = self.queue.clone();
        let removed = self
            .queue_writer
            .run(move |conn| {
                let sql = format!("DELETE FROM \"{queue}\" WHERE seq BETWEEN ?1 AND ?2");
                Ok(conn.prepare_cached(&sql)?.execute(params![first, last])?)
            })
            .await?;
        lock(&self.claims).remove(&batch.token);
        if removed < claimed {
            tracing::warn!(claimed, removed, "part of the batch had already been moved");
        }
        Ok(MoveOutcome {
            inserted,
            duplicates: removed.saturating_sub(inserted),
        })
    }

    /// Merges the buckets that tile the range, and counts raw events only at its ragged
    /// ends (under an hour each).
    pub(crate) async fn stats(&self, range: &TimeRange) -> Result<Stats> {
        let range = range.clone();
        self.read(move |conn, _| {
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
        self.read(|conn, queue| {
            let n: i64 =
                conn.query_row(&format!("SELECT COUNT(*) FROM q.\"{queue}\""), [], |r| {
                    r.get(0)
                })?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    pub(crate) async fn event_ids(&self, site_id: &str) -> Result<Vec<Uuid>> {
        let site_id = site_id.to_owned();
        self.read(move |conn, _| {
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

/// Writes queued events in one transaction: the queue writer's group commit.
fn insert_queued(
    conn: &mut Connection,
    queue: &str,
    events: &mut dyn Iterator<Item = &QueuedEvent>,
) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO \"{queue}\" ({EVENT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?;
        for e in events {
            let props = e
                .props
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("props: {e}")))?;
            insert.execute(params![
                e.event_id.to_string(),
                e.site_id,
                e.event_type,
                e.path,
                e.user_id,
                millis(e.timestamp),
                millis(e.ingested_at),
                props,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
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

/// The queue, in `queue.db`. No unique index on `event_id`: a copy sent twice is
/// dropped when moved, as `events` is keyed by it. Claims are kept in memory.
fn create_queue_table(conn: &Connection, queue: &str) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{queue}\" (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id TEXT NOT NULL,
             site_id TEXT NOT NULL,
             event_type TEXT NOT NULL,
             path TEXT,
             user_id TEXT,
             timestamp INTEGER NOT NULL,
             ingested_at INTEGER NOT NULL,
             props TEXT
         );"
    ))?;
    Ok(())
}

/// Makes `queue.db` readable as `q` from a `beacon.db` connection.
fn attach_queue(conn: &Connection, queue_path: &Path) -> Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS q", [queue_path.to_string_lossy()])?;
    conn.execute_batch("PRAGMA q.synchronous = FULL;")?;
    Ok(())
}

/// Databases from before `queue.db` kept the queue in `beacon.db`: its rows move over
/// once, at open. Copy, commit, then drop: a crash in between leaves a second copy of
/// some rows in the queue, which moving drops.
fn move_old_queue(conn: &mut Connection, queue: &str) -> Result<()> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?1)",
        [queue],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    tracing::info!("moving the queue from {DB_FILE} to {QUEUE_FILE} (once)");
    conn.execute(
        &format!(
            "INSERT INTO q.\"{queue}\" ({EVENT_COLUMNS})
             SELECT {EVENT_COLUMNS} FROM main.\"{queue}\" ORDER BY seq"
        ),
        [],
    )?;
    conn.execute_batch(&format!("DROP TABLE main.\"{queue}\";"))?;
    Ok(())
}

/// `events`, the salts and the rollups, in `beacon.db`.
fn create_schema(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (
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
         ) WITHOUT ROWID;",
    )?;
    Ok(())
}

/// Copies queue rows `?1..=?2` into `events`, skipping those there already, with
/// `processed_at` `?3`.
fn insert_from_queue(queue: &str, returning: &str) -> String {
    format!(
        "INSERT INTO events ({EVENT_COLUMNS}, processed_at)
         SELECT {EVENT_COLUMNS}, ?3 FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2
         ON CONFLICT(event_id) DO NOTHING {returning}"
    )
}

/// Inserts the range's events that are not in `events` yet and adds exactly those to
/// the rollups: the path for a batch moved in part already, or holding a copy twice.
fn insert_new_and_count(tx: &Transaction<'_>, queue: &str, first: i64, last: i64) -> Result<usize> {
    // RETURNING gives the events new to `events`: exactly those count.
    let inserted: Vec<CountedRow> = tx
        .prepare_cached(&insert_from_queue(
            queue,
            "RETURNING site_id, event_type, path, user_id, timestamp",
        ))?
        .query_map(params![first, last, millis(Utc::now())], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    add_to_rollups(
        tx,
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
    Ok(inserted.len())
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
