//! Records to and from BSON documents, value ids, and the error codes Beacon tells
//! apart.

use chrono::Utc;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::error::ErrorKind;
use uuid::Uuid;

use crate::{Context, QueuedEvent, Result, StoreError, from_millis, millis};

/// A write that found a unique key taken (the `_id`'s, or another unique index's).
pub(super) const DUPLICATE_KEY: i32 = 11000;
/// `create` of a collection that exists.
pub(super) const NAMESPACE_EXISTS: i32 = 48;

pub(super) fn bson_time(t: chrono::DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(millis(t))
}

pub(super) fn count_field(d: &Document, field: &str) -> u64 {
    d.get(field).map_or(0, count_of)
}

/// A value id as stored: the same 64 bits, as BSON's signed integer.
pub(super) fn bson_id(id: u64) -> Bson {
    Bson::Int64(i64::from_le_bytes(id.to_le_bytes()))
}

/// Reads a value id stored by [`bson_id`] from a document's `_id`.
pub(super) fn id_of(d: &Document) -> Option<u64> {
    d.get_i64("_id")
        .ok()
        .map(|id| u64::from_le_bytes(id.to_le_bytes()))
}

fn count_of(value: &Bson) -> u64 {
    match value {
        Bson::Int32(n) => u64::try_from(*n).unwrap_or(0),
        Bson::Int64(n) => u64::try_from(*n).unwrap_or(0),
        Bson::Double(n) => *n as u64,
        _ => 0,
    }
}

pub(super) fn count_bson(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

/// A single write (or upsert) that lost a race to insert the same `_id`.
pub(super) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => command_code(e) == Some(DUPLICATE_KEY),
    }
}

pub(super) fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// The indexes of the documents an `insert_many` found there already.
pub(super) fn duplicate_indexes(e: &mongodb::error::Error) -> std::collections::HashSet<usize> {
    match &*e.kind {
        ErrorKind::InsertMany(err) => err
            .write_errors
            .iter()
            .flatten()
            .filter(|w| w.code == DUPLICATE_KEY)
            .map(|w| w.index)
            .collect(),
        _ => std::collections::HashSet::new(),
    }
}

/// The documents an unordered `insert_many` refused, by index, with the code and
/// message of each; or the error itself when it was not about single documents (the
/// database unreachable, a write concern not met), which a retry may cure.
pub(super) fn refused_documents(e: mongodb::error::Error) -> Result<Vec<(usize, i32, String)>> {
    let refused = match &*e.kind {
        ErrorKind::InsertMany(err) if err.write_concern_error.is_none() => err
            .write_errors
            .as_ref()
            .filter(|errors| !errors.is_empty())
            .map(|errors| {
                errors
                    .iter()
                    .map(|w| (w.index, w.code, w.message.clone()))
                    .collect()
            }),
        _ => None,
    };
    refused.ok_or_else(|| e.into())
}

/// True when every write error of an insert is a duplicate key: those events are already
/// queued, which is what the caller wanted.
pub(super) fn only_duplicate_keys(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(err) => {
            err.write_concern_error.is_none()
                && err
                    .write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// The queue-only field of a cookieless visitor's id of the day before.
pub(super) const CONTINUES: &str = "continues";

/// An event as the queue holds it; `events` holds the same without [`CONTINUES`].
pub(super) fn to_queue_doc(e: &QueuedEvent) -> Document {
    let mut d = doc! {
        "_id": e.event_id.to_string(),
        "site_id": &e.site_id,
        "event_type": &e.event_type,
        "path": e.path.as_deref().map_or(Bson::Null, Bson::from),
        "user_id": e.user_id.as_deref().map_or(Bson::Null, Bson::from),
        "timestamp": bson_time(e.timestamp),
        "ingested_at": bson_time(e.ingested_at),
    };
    for (name, value) in Context::FIELDS.iter().zip(e.context.values()) {
        if let Some(value) = value {
            d.insert(*name, value);
        }
    }
    if let Some(previous) = &e.continues {
        d.insert(CONTINUES, previous);
    }
    if let Some(props) = &e.props {
        // As JSON text, not a BSON document: MongoDB reads documents as Extended JSON,
        // so `{"$oid": …}` or `{"$date": …}` inside props would change or vanish.
        if let Ok(text) = serde_json::to_string(props) {
            d.insert("props", text);
        }
    }
    d
}

pub(super) fn from_doc(d: &Document) -> Result<QueuedEvent> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("queue document lacks {what}: {d}"));
    let opt_str = |k: &str| d.get_str(k).ok().map(str::to_owned);
    Ok(QueuedEvent {
        event_id: d
            .get_str("_id")
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| corrupt("_id"))?,
        site_id: opt_str("site_id").ok_or_else(|| corrupt("site_id"))?,
        event_type: opt_str("event_type").ok_or_else(|| corrupt("event_type"))?,
        path: opt_str("path"),
        user_id: opt_str("user_id"),
        timestamp: d
            .get_datetime("timestamp")
            .map_err(|_| corrupt("timestamp"))
            .and_then(|t| from_millis(t.timestamp_millis()))?,
        ingested_at: d
            .get_datetime("ingested_at")
            .map_err(|_| corrupt("ingested_at"))
            .and_then(|t| from_millis(t.timestamp_millis()))?,
        props: d
            .get_str("props")
            .ok()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(&format!("props as JSON ({e})")))?,
        context: Context::from_values(|i| opt_str(Context::FIELDS[i])),
        continues: opt_str(CONTINUES),
    })
}
