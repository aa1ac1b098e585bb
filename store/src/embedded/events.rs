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
use rusqlite::{Connection, Row as SqlRow, Statement, params};
use uuid::Uuid;

use super::codec::{Inserts, parse_props, props_json, values};
use super::texts::Texts;
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

/// The inserts into `events` and into `server_timed` (see [`Inserts`]); only the last
/// answers the ids it added. `RETURNING` made moves dearer (BENCHMARKS.md, section 21),
/// so it is used only to tell a resend from a new event (see [`added_rows`] and
/// [`new_server_timed`]).
struct Statements {
    events: Inserts,
    server_timed: Inserts,
    server_timed_returning: Inserts,
}

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    let server_timed = |returning: &'static str| {
        Inserts::new(1, move |rows| {
            format!(
                "INSERT OR IGNORE INTO server_timed (id) VALUES {}{returning}",
                values(1, rows)
            )
        })
    };
    Statements {
        events: Inserts::new(COLUMNS.len(), |rows| {
            format!(
                "INSERT OR IGNORE INTO events ({}) VALUES {}",
                COLUMNS.join(", "),
                values(COLUMNS.len(), rows)
            )
        }),
        server_timed: server_timed(""),
        server_timed_returning: server_timed(" RETURNING id"),
    }
});

/// A row of `events`, its texts' ids looked up.
struct Row<'a> {
    e: &'a QueuedEvent,
    /// The event's time, and its arrival and move as differences (see the module doc).
    time: i64,
    ingested: i64,
    processed: i64,
    site: i64,
    event_type: i64,
    context: Option<i64>,
    props: Option<String>,
}

/// Inserts `events`, moved at `processed_at`, each unless an event with its id is stored
/// (see the module doc); answers, for each, whether it was added. `processed_at` must
/// differ from every earlier move's (see [`added_rows`]).
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
    let new_ids = new_server_timed(conn, &server_timed)?;
    let mut rows = Vec::with_capacity(events.len());
    let mut to_insert = Vec::with_capacity(events.len());
    let mut contexts = Contexts::default();
    for e in events {
        let insert =
            !is_server_timed(e) || new_ids.as_ref().is_none_or(|ids| ids.contains(&e.event_id));
        if insert {
            rows.push(row(conn, texts, &mut contexts, e, processed_at)?);
        }
        to_insert.push(insert);
    }
    let mut added = added_rows(conn, &rows)?.into_iter();
    Ok(to_insert
        .into_iter()
        .map(|insert| insert && added.next() == Some(true))
        .collect())
}

/// Inserts `rows`; answers, for each, whether it was added. A statement that added all
/// of its rows or none says so in its count of changes. One that added only some was
/// given a resend of an event moved before: each of its rows is looked up, and the one
/// stored now carries this move's times. That costs one lookup a row, and only for a
/// statement with a resend, where `RETURNING` on every statement made all moves dearer
/// (BENCHMARKS.md, section 21).
///
/// A stored row is told from this move's by `processed`: a copy moved before with the
/// same arrival was moved at another time. Each move of a writer is later than the one
/// before (see `moves`); only a clock set back across a restart, to the very
/// millisecond of an earlier move of the same copy, could make them equal.
fn added_rows(conn: &Connection, rows: &[Row<'_>]) -> rusqlite::Result<Vec<bool>> {
    let mut added = Vec::with_capacity(rows.len());
    STATEMENTS.events.run(conn, rows, bind_row, |stmt, chunk| {
        let changes = stmt.raw_execute()?;
        if changes == 0 || changes == chunk.len() {
            added.extend(std::iter::repeat_n(changes > 0, chunk.len()));
            return Ok(());
        }
        let mut stored = conn.prepare_cached(
            "SELECT ingested, processed FROM events WHERE site = ?1 AND time = ?2 AND id = ?3",
        )?;
        for row in chunk {
            let times = stored.query_row(
                params![row.site, row.time, row.e.event_id.as_bytes()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            added.push(times == (row.ingested, row.processed));
        }
        Ok(())
    })?;
    Ok(added)
}

/// Whether the server timed `e` (its arrival is its time): its resend gets another time,
/// so another key, and only `server_timed` catches it.
fn is_server_timed(e: &QueuedEvent) -> bool {
    e.ingested_at == e.timestamp
}

/// The text ids of the contexts of an insert's events so far: most events of a batch
/// share a few contexts, each written as JSON and looked up once.
type Contexts<'a> = HashMap<[Option<&'a str>; Context::FIELDS.len()], i64, ahash::RandomState>;

/// `e`, moved at `processed_at`, as a row: its texts' ids (added if new), its times and
/// its props as text.
fn row<'a>(
    conn: &Connection,
    texts: &mut Texts,
    contexts: &mut Contexts<'a>,
    e: &'a QueuedEvent,
    processed_at: i64,
) -> rusqlite::Result<Row<'a>> {
    let values = e.context.values();
    let context = if values.iter().all(Option::is_none) {
        None
    } else if let Some(id) = contexts.get(&values) {
        Some(*id)
    } else {
        let json = serde_json::to_string(&values)
            .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
        let id = texts.id(conn, &json)?;
        contexts.insert(values, id);
        Some(id)
    };
    let (time, ingested) = (millis(e.timestamp), millis(e.ingested_at));
    Ok(Row {
        e,
        time,
        ingested: ingested.saturating_sub(time),
        processed: processed_at.saturating_sub(ingested),
        site: texts.id(conn, &e.site_id)?,
        event_type: texts.id(conn, &e.event_type)?,
        context,
        props: props_json(e).map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?,
    })
}

/// Binds `row` to the parameters `?first…`, in [`COLUMNS`]' order.
fn bind_row(stmt: &mut Statement<'_>, first: usize, row: &Row<'_>) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, row.e.event_id.as_bytes())?;
    stmt.raw_bind_parameter(first + 1, row.site)?;
    stmt.raw_bind_parameter(first + 2, row.time)?;
    stmt.raw_bind_parameter(first + 3, row.event_type)?;
    stmt.raw_bind_parameter(first + 4, &row.e.path)?;
    stmt.raw_bind_parameter(first + 5, &row.e.user_id)?;
    stmt.raw_bind_parameter(first + 6, row.ingested)?;
    stmt.raw_bind_parameter(first + 7, row.processed)?;
    stmt.raw_bind_parameter(first + 8, &row.props)?;
    stmt.raw_bind_parameter(first + 9, row.context)
}

/// Adds the ids of `events`, all timed by the server, to `server_timed`; answers those
/// added, or `None` when all were. The ids are inserted in a savepoint, and counted:
/// as a rule all are new. When one was there already (a resend), the savepoint is rolled
/// back and the ids inserted again, with `RETURNING`. A resend thus costs its move these
/// inserts twice, never more. Unlike `events`' rows, these carry nothing that tells this
/// move's from an earlier one's (see [`added_rows`]).
fn new_server_timed(
    conn: &Connection,
    events: &[&QueuedEvent],
) -> rusqlite::Result<Option<HashSet<Uuid, ahash::RandomState>>> {
    if events.is_empty() {
        return Ok(None);
    }
    let bind = |stmt: &mut Statement<'_>, first, e: &&QueuedEvent| {
        stmt.raw_bind_parameter(first, e.event_id.as_bytes())
    };
    conn.execute_batch("SAVEPOINT server_timed")?;
    let mut changes = 0;
    STATEMENTS.server_timed.run(conn, events, bind, |stmt, _| {
        changes += stmt.raw_execute()?;
        Ok(())
    })?;
    if changes == events.len() {
        conn.execute_batch("RELEASE server_timed")?;
        return Ok(None);
    }
    conn.execute_batch("ROLLBACK TO server_timed; RELEASE server_timed")?;
    let mut added: HashSet<Uuid, ahash::RandomState> = HashSet::default();
    added.reserve(events.len());
    STATEMENTS
        .server_timed_returning
        .run(conn, events, bind, |stmt, _| {
            let mut ids = stmt.raw_query();
            while let Some(id) = ids.next()? {
                let id = Uuid::from_slice(id.get_ref(0)?.as_blob()?).map_err(|err| {
                    rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(err))
                })?;
                added.insert(id);
            }
            Ok(())
        })?;
    Ok(Some(added))
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
