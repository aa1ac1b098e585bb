//! Reads for `/stats` (the buckets and raw events of each piece of the plan, in one
//! snapshot, and the texts of the top values), pages of stored events, and the count of
//! dead letters.

use std::collections::HashMap;

use beacon_protocol::TimeRange;
use rusqlite::{Transaction, params};

use super::EmbeddedStore;
use super::codec::sql_id;
use super::events::{self, SELECT, SITE};
use crate::rollup::plan::{self, Piece};
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::TopK;
use crate::rollup::{BucketRead, EXTRA_NAMES, Rollup, StoredBucket};
use crate::stats::{Part, merged};
use crate::{EventsPage, QueuedEvent, Result, millis};

impl EmbeddedStore {
    /// What each piece of the range's plan holds, read in one transaction.
    pub(crate) async fn stats_parts(&self, range: &TimeRange) -> Result<Vec<Part>> {
        let range = range.clone();
        self.read(move |conn, _| {
            let tx = conn.transaction()?; // one snapshot for every piece
            let event_type = plan::bucket_type(&range);
            plan::plan(&range)
                .into_iter()
                .map(|piece| match piece {
                    Piece::Buckets {
                        granularity,
                        from,
                        to,
                    } => {
                        let read = BucketRead::for_stats(
                            &range.site_id,
                            granularity,
                            from,
                            to,
                            event_type,
                        );
                        Ok(Part::Buckets(merged(read_buckets(&tx, &read)?)))
                    }
                    Piece::Raw { from, to } => {
                        let mut stmt = tx.prepare_cached(&format!(
                            "SELECT e.path, e.user_id FROM events e
                             WHERE e.site = {SITE} AND e.time >= ?2 AND e.time < ?3
                             AND (?4 = '' OR e.type = (SELECT id FROM texts WHERE value = ?4))"
                        ))?;
                        let rows = stmt
                            .query_map(params![range.site_id, from, to, event_type], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        Ok(Part::Raw(rows))
                    }
                })
                .collect()
        })
        .await
    }

    /// The buckets `read` asks for, each as stored.
    pub(crate) async fn buckets(&self, read: &BucketRead) -> Result<Vec<StoredBucket>> {
        let read = read.clone();
        self.read(move |conn, _| {
            let tx = conn.transaction()?;
            read_buckets(&tx, &read)
        })
        .await
    }

    /// The texts of value ids, from the dictionary.
    pub(crate) async fn value_texts(&self, ids: &[u64]) -> Result<HashMap<u64, String>> {
        let ids = ids.to_vec();
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached("SELECT value FROM dict WHERE id = ?1")?;
            let mut texts = HashMap::with_capacity(ids.len());
            for id in ids {
                let mut rows = stmt.query([sql_id(id)])?;
                if let Some(row) = rows.next()? {
                    texts.insert(id, row.get(0)?);
                }
            }
            Ok(texts)
        })
        .await
    }

    /// Events the database refused for good.
    pub(crate) async fn dead_letters(&self) -> Result<u64> {
        self.read(|conn, _| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// One page of a site's events, by timestamp then id. The page starts at the later
    /// of `from` and the last event's time, so that the index range starts there: each
    /// page costs what it returns, however deep into the site it is.
    pub(crate) async fn events_page(&self, page: &EventsPage) -> Result<Vec<QueuedEvent>> {
        let page = page.clone();
        self.read(move |conn, _| {
            let from = page.from.map_or(i64::MIN, millis);
            let (start, after_at, after_id) = match page.after {
                Some((at, id)) => (from.max(millis(at)), millis(at), id.as_bytes().to_vec()),
                None => (from, i64::MIN, Vec::new()),
            };
            let mut stmt = conn.prepare_cached(&format!(
                "{SELECT} WHERE e.site = {SITE} AND e.time >= ?2 AND e.time < ?3
                 AND (e.time > ?4 OR e.id > ?5)
                 ORDER BY e.time, e.id LIMIT ?6"
            ))?;
            let mut contexts = HashMap::new();
            let rows = stmt.query_map(
                params![
                    page.site_id,
                    start,
                    page.to.map_or(i64::MAX, millis),
                    after_at,
                    after_id,
                    i64::try_from(page.limit).unwrap_or(i64::MAX),
                ],
                |row| Ok(events::read(row, &mut contexts)),
            )?;
            rows.map(|r| r?).collect()
        })
        .await
    }
}

/// The buckets `read` asks for, each as stored.
pub(super) fn read_buckets(tx: &Transaction<'_>, read: &BucketRead) -> Result<Vec<StoredBucket>> {
    let range = (read.from.unwrap_or(i64::MIN), read.to.unwrap_or(i64::MAX));
    let filter = "site_id = ?1 AND granularity = ?2 AND start >= ?3 AND start < ?4";
    let users = if read.users { "users" } else { "NULL" };
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT event_type, start, count, {users}, {} FROM rollups WHERE {filter}",
        EXTRA_NAMES.join(", ")
    ))?;
    let args = params![read.site_id, read.granularity.code(), range.0, range.1];
    let mut rows = stmt.query(args)?;
    let mut buckets = Vec::new();
    let mut at: HashMap<(String, i64), usize> = HashMap::new();
    while let Some(row) = rows.next()? {
        let event_type: String = row.get(0)?;
        if !read.types.wants(&event_type) {
            continue;
        }
        let start: i64 = row.get(1)?;
        let mut rollup = Rollup {
            count: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            ..Rollup::default()
        };
        if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(3)? {
            rollup.users = Sketch::from_bytes(&bytes)?;
        }
        for (i, x) in rollup.extra.iter_mut().enumerate() {
            *x = row.get(4 + i)?;
        }
        at.insert((event_type.clone(), start), buckets.len());
        buckets.push(StoredBucket {
            event_type,
            start,
            rollup,
        });
    }
    let Some(dim) = read.dim else {
        return Ok(buckets);
    };
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT event_type, start, summary FROM rollup_dims WHERE {filter} AND dim = ?5"
    ))?;
    let mut rows = stmt.query(params![
        read.site_id,
        read.granularity.code(),
        range.0,
        range.1,
        dim
    ])?;
    while let Some(row) = rows.next()? {
        let key: (String, i64) = (row.get(0)?, row.get(1)?);
        if let Some(i) = at.get(&key) {
            let summary = TopK::from_bytes(&row.get::<_, Vec<u8>>(2)?)?;
            buckets[*i].rollup.dims.insert(dim, summary);
        }
    }
    Ok(buckets)
}
