//! Records to and from rows: the column list shared by the queue and `events`, and the
//! conversions of ids, times and props.

use rusqlite::Row;
use uuid::Uuid;

use crate::{QueuedEvent, Result, StoreError, from_millis};

/// The columns the queue and `events` share, in this order.
pub(super) const EVENT_COLUMNS: &str =
    "event_id, site_id, event_type, path, user_id, timestamp, ingested_at, props";

/// `props` as stored: compact JSON text.
pub(super) fn props_json(e: &QueuedEvent) -> Result<Option<String>> {
    e.props
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("props: {e}")))
}

/// Reads [`EVENT_COLUMNS`] starting at column `first`.
pub(super) fn read_event(row: &Row<'_>, first: usize) -> Result<QueuedEvent> {
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

/// A value id as SQLite stores it: the same 64 bits, as a signed integer.
pub(super) fn sql_id(id: u64) -> i64 {
    i64::from_le_bytes(id.to_le_bytes())
}
