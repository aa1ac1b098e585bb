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

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::codec::{parse_props, props_json, read_event};
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
pub(super) fn read(row: &Row<'_>, contexts: &mut HashMap<i64, Context>) -> Result<QueuedEvent> {
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
    cache: HashMap<String, i64>,
    /// The bytes of `cache`'s texts.
    cached_bytes: usize,
    /// Ids read or added since the last commit, which a rollback may undo.
    pending: HashMap<String, i64>,
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

/// Inserts `e`, moved at `processed_at`, unless an event with its id is stored (see the
/// module doc); answers whether it did.
pub(super) fn insert(
    conn: &Connection,
    texts: &mut Texts,
    e: &QueuedEvent,
    processed_at: i64,
) -> rusqlite::Result<bool> {
    let site = texts.id(conn, &e.site_id)?;
    let event_type = texts.id(conn, &e.event_type)?;
    let values = e.context.values();
    let context = if values.iter().all(Option::is_none) {
        None
    } else {
        let json = serde_json::to_string(&values)
            .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
        Some(texts.id(conn, &json)?)
    };
    let props = props_json(e).map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
    let (time, ingested) = (millis(e.timestamp), millis(e.ingested_at));
    if ingested == time && !remember_server_timed(conn, e.event_id.as_bytes())? {
        return Ok(false);
    }
    let added = conn
        .prepare_cached(
            "INSERT INTO events (id, site, time, type, path, user_id, ingested, processed,
                 props, context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            e.event_id.as_bytes(),
            site,
            time,
            event_type,
            e.path,
            e.user_id,
            ingested.saturating_sub(time),
            processed_at.saturating_sub(ingested),
            props,
            context,
        ])?;
    Ok(added == 1)
}

/// Keeps the id of an event the server timed (its arrival is its time); answers whether
/// it is new. An event sent with its own time needs none: its key catches a resend.
fn remember_server_timed(conn: &Connection, id: &[u8]) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("INSERT INTO server_timed (id) VALUES (?1) ON CONFLICT DO NOTHING")?
        .execute([id])?
        == 1)
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

/// The layouts `events` has had, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Text ids, and every text in every row.
    First,
    /// Keyed by id, with an index on (site, time).
    Second,
    /// This one.
    Current,
}

/// The layout of `events` in `conn`'s file.
pub(super) fn layout(conn: &Connection) -> Result<Layout> {
    let column = |name: &str| -> Result<Option<i64>> {
        Ok(conn
            .prepare_cached("SELECT pk FROM pragma_table_info('events') WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    };
    Ok(if column("event_id")?.is_some() {
        Layout::First
    } else if column("id")? == Some(1) {
        Layout::Second
    } else {
        Layout::Current
    })
}

/// Rewrites `events` of an earlier layout into this one, in one transaction: a crash
/// leaves the old table whole, to be rewritten again. The old table's pages are then
/// given back (`open::shrink`).
pub(super) fn upgrade(conn: &mut Connection) -> Result<()> {
    let from = layout(conn)?;
    if from == Layout::Current {
        return Ok(());
    }
    tracing::info!(
        ?from,
        "rewriting events into the current layout: once, at start-up"
    );
    let tx = conn.transaction()?;
    tx.execute_batch("ALTER TABLE events RENAME TO events_old;")?;
    tx.execute_batch(SCHEMA)?;
    let n = if from == Layout::First {
        let mut texts = Texts::default();
        let mut n = 0u64;
        let mut rows = tx.prepare(&format!(
            "SELECT {}, processed_at FROM events_old ORDER BY site_id, timestamp",
            super::codec::EVENT_COLUMNS
        ))?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let event = read_event(row, 0)?;
            let processed_at: i64 = row.get(super::codec::EVENT_COLUMN_COUNT)?;
            insert(&tx, &mut texts, &event, processed_at)?;
            n += 1;
        }
        n
    } else {
        let columns = "site, time, id, type, path, user_id, ingested, processed, props, context";
        tx.execute(
            "INSERT INTO server_timed (id) SELECT id FROM events_old WHERE ingested = 0",
            [],
        )?;
        tx.execute(
            &format!(
                "INSERT INTO events ({columns}) SELECT {columns} FROM events_old
                 ORDER BY site, time, id"
            ),
            [],
        )? as u64
    };
    tx.execute_batch("DROP TABLE events_old")?;
    tx.commit()?;
    tracing::info!(events = n, "events rewritten");
    // The old table's pages are free now; give them back to the file system.
    super::open::shrink(conn)?;
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
