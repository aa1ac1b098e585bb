//! How `events` stores an event, smallest first: disk is what a self-hosted install pays
//! for every month.
//!
//! - The id as its 16 bytes, not 36 characters of text.
//! - Texts that repeat (the site, the event type, and the context's fields as one JSON
//!   array) once each in `texts`, referenced by a small integer id. Paths stay in the
//!   row: with a long tail of distinct paths, reading each from a dictionary made raw
//!   queries three to four times slower (BENCHMARKS.md, section 10).
//! - Times as integers: the event's own, then when it arrived and when it was moved,
//!   each as a difference from the one before, which is small.
//! - Rows kept in the order reads want them, by site, time and id, so that no second
//!   index is needed: that order is also the key that makes a resend of an event
//!   (same id, same time) land on its first copy. Only an event the server timed (sent
//!   without a `timestamp`) gets another time when sent again, so the ids of those
//!   alone are kept in `server_timed`, which catches their resends.
//!
//! Rows are read back whole through [`SELECT`] and [`read`], which decodes each context
//! once per read however many events share it.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row as SqlRow, Statement};
use uuid::Uuid;

use super::codec::{Inserts, parse_props, props_json, values};
use crate::{Context, QueuedEvent, Result, StoreError, from_millis, millis};

/// The tables: `events` (keyed by site, time and id), `server_timed` and `texts`.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS texts (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS events (
        site INTEGER NOT NULL,
        time INTEGER NOT NULL,
        id BLOB NOT NULL,
        type INTEGER NOT NULL,
        path TEXT,
        user_id TEXT,
        ingested INTEGER NOT NULL,
        processed INTEGER NOT NULL,
        props TEXT,
        context INTEGER,
        PRIMARY KEY (site, time, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS server_timed (id BLOB PRIMARY KEY) WITHOUT ROWID;";

/// Stored events (as `e`), for [`read`]; a query adds `WHERE`.
pub(super) const SELECT: &str = "SELECT e.id, s.value, t.value, e.path, e.user_id, e.time,
        e.ingested, e.props, e.context, c.value
    FROM events e JOIN texts s ON s.id = e.site JOIN texts t ON t.id = e.type
        LEFT JOIN texts c ON c.id = e.context";

/// Reads a row of [`SELECT`]; `contexts` keeps the contexts decoded so far, by id.
pub(super) fn read(row: &SqlRow<'_>, contexts: &mut HashMap<i64, Context>) -> Result<QueuedEvent> {
    let id: Vec<u8> = row.get(0)?;
    let time: i64 = row.get(5)?;
    let props: Option<String> = row.get(7)?;
    let context = match row.get::<_, Option<i64>>(8)? {
        None => Context::default(),
        Some(id) => match contexts.get(&id) {
            Some(context) => context.clone(),
            None => {
                let json: String = row.get(9)?;
                let mut values: Vec<Option<String>> = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("context {id}: {e}")))?;
                values.resize(Context::FIELDS.len(), None);
                let context = Context::from_values(|i| values[i].take());
                contexts.insert(id, context.clone());
                context
            }
        },
    };
    Ok(QueuedEvent {
        event_id: Uuid::from_slice(&id)
            .map_err(|_| StoreError::Corrupt(format!("event id {id:?}")))?,
        site_id: row.get(1)?,
        event_type: row.get(2)?,
        path: row.get(3)?,
        user_id: row.get(4)?,
        timestamp: from_millis(time)?,
        ingested_at: from_millis(time.saturating_add(row.get(6)?))?,
        props: parse_props(props)?,
        context,
        continues: None,
    })
}

/// The id of a site's text, for `WHERE e.site = …` (no row, so no match, if unknown).
pub(super) const SITE: &str = "(SELECT id FROM texts WHERE value = ?1)";

/// The bytes of texts whose ids are kept in memory, so that most lookups cost no query.
/// By bytes, not entries: a context can be 4 KB, and clients choose how many differ.
const CACHED_BYTES: usize = 4 << 20;

/// The ids of texts, as the writer thread knows them.
#[derive(Debug, Default)]
pub(crate) struct Texts {
    /// Committed ids.
    cache: HashMap<String, i64, ahash::RandomState>,
    /// The bytes of `cache`'s texts.
    cached_bytes: usize,
    /// Ids read or added since the last commit, which a rollback may undo.
    pending: HashMap<String, i64, ahash::RandomState>,
}

impl Texts {
    /// The id of `text`, added to `texts` if new.
    fn id(&mut self, conn: &Connection, text: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.cache.get(text).or_else(|| self.pending.get(text)) {
            return Ok(*id);
        }
        let found = conn
            .prepare_cached("SELECT id FROM texts WHERE value = ?1")?
            .query_row([text], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO texts (value) VALUES (?1)")?
                    .execute([text])?;
                conn.last_insert_rowid()
            }
        };
        self.pending.insert(text.to_owned(), id);
        Ok(id)
    }

    /// Before a transaction: nothing is pending (a failed one may have left some).
    pub(crate) fn begin(&mut self) {
        self.pending.clear();
    }

    /// After a commit: what was pending is now known for good.
    pub(crate) fn committed(&mut self) {
        let pending: usize = self.pending.keys().map(String::len).sum();
        if self.cached_bytes + pending > CACHED_BYTES {
            self.cache.clear();
            self.cached_bytes = 0;
        }
        if pending <= CACHED_BYTES {
            self.cached_bytes += pending;
            self.cache.extend(self.pending.drain());
        }
        self.pending.clear();
    }

    /// After a rollback (of a transaction or a savepoint): what was added may be gone.
    pub(crate) fn rolled_back(&mut self) {
        self.pending.clear();
    }
}

/// The columns an insert into `events` sets, in the order [`bind_row`] binds them.
const COLUMNS: [&str; 10] = [
    "id",
    "site",
    "time",
    "type",
    "path",
    "user_id",
    "ingested",
    "processed",
    "props",
    "context",
];

/// The inserts into `events` and into `server_timed` (see [`Inserts`]); each answers
/// the ids it added.
struct Statements {
    events: Inserts,
    server_timed: Inserts,
}

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements {
    events: Inserts::new(COLUMNS.len(), |rows| {
        format!(
            "INSERT OR IGNORE INTO events ({}) VALUES {} RETURNING id",
            COLUMNS.join(", "),
            values(COLUMNS.len(), rows)
        )
    }),
    server_timed: Inserts::new(1, |rows| {
        format!(
            "INSERT OR IGNORE INTO server_timed (id) VALUES {} RETURNING id",
            values(1, rows)
        )
    }),
});

/// A row of `events`, its texts' ids looked up.
struct Row<'a> {
    e: &'a QueuedEvent,
    site: i64,
    event_type: i64,
    context: Option<i64>,
    props: Option<String>,
}

/// Inserts `events`, moved at `processed_at`, each unless an event with its id is stored
/// (see the module doc); answers, for each, whether it was added.
pub(super) fn insert(
    conn: &Connection,
    texts: &mut Texts,
    events: &[&QueuedEvent],
    processed_at: i64,
) -> rusqlite::Result<Vec<bool>> {
    let server_timed: Vec<&QueuedEvent> = events
        .iter()
        .copied()
        .filter(|e| is_server_timed(e))
        .collect();
    let new_ids = added_ids(
        conn,
        &STATEMENTS.server_timed,
        &server_timed,
        |stmt, first, e| stmt.raw_bind_parameter(first, e.event_id.as_bytes()),
    )?;
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        if is_server_timed(e) && !new_ids.contains(&e.event_id) {
            continue;
        }
        rows.push(row(conn, texts, e)?);
    }
    let added = added_ids(conn, &STATEMENTS.events, &rows, |stmt, first, row| {
        bind_row(stmt, first, row, processed_at)
    })?;
    Ok(events.iter().map(|e| added.contains(&e.event_id)).collect())
}

/// Whether the server timed `e` (its arrival is its time): its resend gets another time,
/// so another key, and only `server_timed` catches it.
fn is_server_timed(e: &QueuedEvent) -> bool {
    e.ingested_at == e.timestamp
}

/// `e` as a row: its texts' ids (added if new) and its props as text.
fn row<'a>(conn: &Connection, texts: &mut Texts, e: &'a QueuedEvent) -> rusqlite::Result<Row<'a>> {
    let values = e.context.values();
    let context = if values.iter().all(Option::is_none) {
        None
    } else {
        let json = serde_json::to_string(&values)
            .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
        Some(texts.id(conn, &json)?)
    };
    Ok(Row {
        e,
        site: texts.id(conn, &e.site_id)?,
        event_type: texts.id(conn, &e.event_type)?,
        context,
        props: props_json(e).map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?,
    })
}

/// Binds `row` to the parameters `?first…`, in [`COLUMNS`]' order.
fn bind_row(
    stmt: &mut Statement<'_>,
    first: usize,
    row: &Row<'_>,
    processed_at: i64,
) -> rusqlite::Result<()> {
    let e = row.e;
    let (time, ingested) = (millis(e.timestamp), millis(e.ingested_at));
    stmt.raw_bind_parameter(first, e.event_id.as_bytes())?;
    stmt.raw_bind_parameter(first + 1, row.site)?;
    stmt.raw_bind_parameter(first + 2, time)?;
    stmt.raw_bind_parameter(first + 3, row.event_type)?;
    stmt.raw_bind_parameter(first + 4, &e.path)?;
    stmt.raw_bind_parameter(first + 5, &e.user_id)?;
    stmt.raw_bind_parameter(first + 6, ingested.saturating_sub(time))?;
    stmt.raw_bind_parameter(first + 7, processed_at.saturating_sub(ingested))?;
    stmt.raw_bind_parameter(first + 8, &row.props)?;
    stmt.raw_bind_parameter(first + 9, row.context)
}

/// Runs `inserts` over `rows`, `bind` binding each; answers the ids added.
fn added_ids<T>(
    conn: &Connection,
    inserts: &Inserts,
    rows: &[T],
    bind: impl Fn(&mut Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<HashSet<Uuid, ahash::RandomState>> {
    let mut added: HashSet<Uuid, ahash::RandomState> = HashSet::default();
    added.reserve(rows.len());
    inserts.run(conn, rows, bind, |stmt| {
        let mut ids = stmt.raw_query();
        while let Some(id) = ids.next()? {
            let id: Vec<u8> = id.get(0)?;
            let id = Uuid::from_slice(&id).map_err(|err| {
                rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(err))
            })?;
            added.insert(id);
        }
        Ok(())
    })?;
    Ok(added)
}

/// Forgets the ids of deleted events the server timed: `deleted` is what a `DELETE …
/// RETURNING id, ingested` of `events` answered.
pub(super) fn forget_server_timed(
    conn: &Connection,
    deleted: &[(Vec<u8>, i64)],
) -> rusqlite::Result<()> {
    let mut forget = conn.prepare_cached("DELETE FROM server_timed WHERE id = ?1")?;
    for (id, _) in deleted.iter().filter(|(_, ingested)| *ingested == 0) {
        forget.execute([id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id added in a savepoint that rolls back is gone: the cache must not keep it.
    #[test]
    fn texts_forget_the_ids_a_rollback_undid() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut texts = Texts::default();
        texts.begin();
        let mut tx = conn.transaction().unwrap();
        {
            let attempt = tx.savepoint().unwrap();
            assert_eq!(texts.id(&attempt, "a").unwrap(), 1);
        }
        texts.rolled_back();
        assert_eq!(texts.id(&tx, "b").unwrap(), 1);
        tx.commit().unwrap();
        texts.committed();
        texts.begin();
        assert_eq!(texts.id(&conn, "b").unwrap(), 1);
        assert_eq!(texts.id(&conn, "a").unwrap(), 2);
    }

    /// The cache holds at most [`CACHED_BYTES`] of texts, however many differ.
    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut texts = Texts::default();
        let long = "x".repeat(4000);
        for i in 0..3000 {
            texts.begin();
            texts.id(&conn, &format!("{long}{i}")).unwrap();
            texts.committed();
            assert!(texts.cached_bytes <= CACHED_BYTES);
        }
        assert!(texts.cache.len() < 3000);
    }
}
