//! Records to and from rows: the column list shared by the queue and `events`, and the
//! conversions of ids, times and props.

use rusqlite::{Connection, Row, Statement};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{Context, QueuedEvent, Result, StoreError, from_millis, millis};

/// The columns the queue and `events` share, in this order: the event's own, then its
/// context's (`Context::FIELDS`).
pub(super) const EVENT_COLUMNS: &str = "event_id, site_id, event_type, path, user_id, \
     timestamp, ingested_at, props, hostname, referrer, source, channel, utm_source, \
     utm_medium, utm_campaign, utm_content, utm_term, browser, browser_version, os, \
     os_version, device, country";
/// How many columns [`EVENT_COLUMNS`] names.
pub(super) const EVENT_COLUMN_COUNT: usize = 8 + Context::FIELDS.len();
/// The context's columns' declarations, for the schema.
pub(super) const CONTEXT_FIELDS: &str = "hostname TEXT, referrer TEXT, source TEXT, \
     channel TEXT, utm_source TEXT, utm_medium TEXT, utm_campaign TEXT, utm_content TEXT, \
     utm_term TEXT, browser TEXT, browser_version TEXT, os TEXT, os_version TEXT, \
     device TEXT, country TEXT";

/// Binds `e` to the parameters `?first…` of an insert of [`EVENT_COLUMNS`].
pub(super) fn bind_event(
    statement: &mut Statement<'_>,
    first: usize,
    e: &QueuedEvent,
) -> Result<()> {
    statement.raw_bind_parameter(first, e.event_id.to_string())?;
    statement.raw_bind_parameter(first + 1, &e.site_id)?;
    statement.raw_bind_parameter(first + 2, &e.event_type)?;
    statement.raw_bind_parameter(first + 3, &e.path)?;
    statement.raw_bind_parameter(first + 4, &e.user_id)?;
    statement.raw_bind_parameter(first + 5, millis(e.timestamp))?;
    statement.raw_bind_parameter(first + 6, millis(e.ingested_at))?;
    statement.raw_bind_parameter(first + 7, props_json(e)?)?;
    for (i, value) in e.context.values().into_iter().enumerate() {
        statement.raw_bind_parameter(first + 8 + i, value)?;
    }
    Ok(())
}

/// `props` as stored: compact JSON text.
pub(super) fn props_json(e: &QueuedEvent) -> Result<Option<String>> {
    e.props
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("props: {e}")))
}

/// `props` as stored (see [`props_json`]), parsed.
pub(super) fn parse_props(props: Option<String>) -> Result<Option<Map<String, Value>>> {
    props
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("props: {e}")))
}

/// An event id as the queue stores it (text), parsed.
pub(super) fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| StoreError::Corrupt(format!("event id {id}")))
}

/// Reads [`EVENT_COLUMNS`] starting at column `first`.
pub(super) fn read_event(row: &Row<'_>, first: usize) -> Result<QueuedEvent> {
    let id: String = row.get(first)?;
    let props: Option<String> = row.get(first + 7)?;
    Ok(QueuedEvent {
        event_id: parse_id(&id)?,
        site_id: row.get(first + 1)?,
        event_type: row.get(first + 2)?,
        path: row.get(first + 3)?,
        user_id: row.get(first + 4)?,
        timestamp: from_millis(row.get(first + 5)?)?,
        ingested_at: from_millis(row.get(first + 6)?)?,
        props: parse_props(props)?,
        context: read_context(row, first + 8)?,
        continues: None,
    })
}

/// Reads the context's columns starting at column `first`.
pub(super) fn read_context(row: &Row<'_>, first: usize) -> Result<Context> {
    let mut failed = None;
    let context = Context::from_values(|i| match row.get(first + i) {
        Ok(v) => v,
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(context),
    }
}

/// Most rows in one multi-row insert: one statement's set-up for all of them, and one
/// cursor, so that rows in key order land where the last one did. 32 rows of the
/// queue's 24 parameters stay far below SQLite's limit (32,766).
pub(super) const ROWS_PER_INSERT: usize = 32;

/// A multi-row insert's text for [`ROWS_PER_INSERT`] rows and for one, made once: the
/// first has hundreds of parameters. Full chunks of rows go to the first, the rest one
/// by one, so that only two statements are ever prepared.
#[derive(Debug)]
pub(crate) struct Inserts {
    many: String,
    one: String,
    /// Parameters per row.
    per_row: usize,
}

impl Inserts {
    /// `sql` makes the insert of a number of rows of `per_row` parameters (see [`values`]).
    pub(super) fn new(per_row: usize, sql: impl Fn(usize) -> String) -> Self {
        Self {
            many: sql(ROWS_PER_INSERT),
            one: sql(1),
            per_row,
        }
    }

    /// Inserts `rows`: `bind` binds a row from a parameter on, `execute` runs each
    /// statement once bound, given the rows bound to it.
    pub(super) fn run<T, E: From<rusqlite::Error>>(
        &self,
        conn: &Connection,
        rows: &[T],
        mut bind: impl FnMut(&mut Statement<'_>, usize, &T) -> Result<(), E>,
        mut execute: impl FnMut(&mut Statement<'_>, &[T]) -> Result<(), E>,
    ) -> Result<(), E> {
        let full = rows.len() - rows.len() % ROWS_PER_INSERT;
        let (many, rest) = rows.split_at(full);
        for (per_insert, sql, group) in [(ROWS_PER_INSERT, &self.many, many), (1, &self.one, rest)]
        {
            if group.is_empty() {
                continue;
            }
            let mut stmt = conn.prepare_cached(sql)?;
            for chunk in group.chunks(per_insert) {
                for (i, row) in chunk.iter().enumerate() {
                    bind(&mut stmt, i * self.per_row + 1, row)?;
                }
                execute(&mut stmt, chunk)?;
            }
        }
        Ok(())
    }
}

/// The `VALUES` of a multi-row insert: `rows` rows of `columns` parameters each,
/// numbered `?1…` row after row.
pub(super) fn values(columns: usize, rows: usize) -> String {
    let row = |r: usize| {
        let first = r * columns + 1;
        let params: Vec<String> = (first..first + columns).map(|i| format!("?{i}")).collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// A value id as SQLite stores it: the same 64 bits, as a signed integer.
pub(super) fn sql_id(id: u64) -> i64 {
    i64::from_le_bytes(id.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_follow_the_contexts_fields() {
        let columns: Vec<&str> = EVENT_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(columns.len(), EVENT_COLUMN_COUNT);
        assert_eq!(&columns[8..], &Context::FIELDS[..]);
        let declared: Vec<&str> = CONTEXT_FIELDS
            .split(',')
            .map(|c| c.split_whitespace().next().unwrap_or_default())
            .collect();
        assert_eq!(&declared[..], &Context::FIELDS[..]);
    }
}
