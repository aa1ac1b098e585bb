//! Earlier layouts of `events`, and their rewrite into the current one (see `events`),
//! once, when a store of an older version opens.

use rusqlite::{Connection, OptionalExtension};

use super::codec::read_event;
use super::events::{SCHEMA, insert};
use super::texts::Texts;
use crate::Result;

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
            insert(&tx, &mut texts, &[&event], processed_at)?;
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
