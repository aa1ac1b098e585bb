//! Reads for `/stats` (the buckets and raw events of each piece of the plan, in one
//! snapshot, and the texts of the top values), pages of stored events, and the count of
//! dead letters.

use std::collections::HashMap;

use beacon_protocol::TimeRange;
use rusqlite::{Transaction, params};

use super::EmbeddedStore;
use super::codec::{EVENT_COLUMNS, read_event, sql_id};
use crate::rollup::plan::{self, Piece};
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::TopK;
use crate::rollup::{PATH, Rollup};
use crate::stats::Part;
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
                        let filter = (
                            range.site_id.as_str(),
                            granularity.code(),
                            event_type,
                            from.unwrap_or(i64::MIN),
                            to.unwrap_or(i64::MAX),
                        );
                        read_buckets(&tx, filter).map(Part::Buckets)
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
                        Ok(Part::Raw(rows))
                    }
                })
                .collect()
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
                Some((at, id)) => (from.max(millis(at)), millis(at), id.to_string()),
                None => (from, i64::MIN, String::new()),
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE site_id = ?1
                 AND timestamp >= ?2 AND timestamp < ?3
                 AND (timestamp > ?4 OR event_id > ?5)
                 ORDER BY timestamp, event_id LIMIT ?6"
            ))?;
            let rows = stmt.query_map(
                params![
                    page.site_id,
                    start,
                    page.to.map_or(i64::MAX, millis),
                    after_at,
                    after_id,
                    i64::try_from(page.limit).unwrap_or(i64::MAX),
                ],
                |row| Ok(read_event(row, 0)),
            )?;
            rows.map(|r| r?).collect()
        })
        .await
    }
}

/// The buckets of one site, granularity and type whose start is in `[from, to)`, merged
/// (with their top paths, the one dimension `/stats` reads).
fn read_buckets(
    tx: &Transaction<'_>,
    (site_id, granularity, event_type, from, to): (&str, &str, &str, i64, i64),
) -> Result<Rollup> {
    let args = params![site_id, granularity, event_type, from, to];
    let bucket_filter = "site_id = ?1 AND granularity = ?2 AND event_type = ?3
                         AND start >= ?4 AND start < ?5";
    let mut total = Rollup::default();
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT count, users FROM rollups WHERE {bucket_filter}"
    ))?;
    let mut rows = stmt.query(args)?;
    while let Some(row) = rows.next()? {
        total.count += u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
        total
            .users
            .merge(&Sketch::from_bytes(&row.get::<_, Vec<u8>>(1)?)?);
    }
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT summary FROM rollup_dims WHERE {bucket_filter} AND dim = ?6"
    ))?;
    let mut rows = stmt.query(params![
        site_id,
        granularity,
        event_type,
        from,
        to,
        PATH.name
    ])?;
    let paths = total.dims.entry(PATH.name).or_default();
    while let Some(row) = rows.next()? {
        paths.merge_unbounded(&TopK::from_bytes(&row.get::<_, Vec<u8>>(0)?)?);
    }
    Ok(total)
}
