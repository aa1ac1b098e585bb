//! Adding a batch to its rollup buckets and its values to the dictionary, inside the
//! move's transaction.
//!
//! A bucket is a row of `rollups` (count, users and side counters) and a row of
//! `rollup_dims` per dimension (its top values), each read, merged and written back: a
//! bounded amount of work per bucket, however many distinct values the bucket has seen.

use rusqlite::{OptionalExtension, Transaction, params};

use super::codec::sql_id;
use crate::Result;
use crate::rollup::EXTRA_NAMES;
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::{EXTRAS, TopK};
use crate::rollup::{BucketKey, Contribution};

/// Adds `contribution` to its buckets and records its values' texts.
pub(super) fn add_to_rollups(tx: &Transaction<'_>, contribution: Contribution) -> Result<()> {
    let mut add_value =
        tx.prepare_cached("INSERT OR IGNORE INTO dict (id, value) VALUES (?1, ?2)")?;
    for (id, value) in &contribution.values {
        add_value.execute(params![sql_id(*id), value])?;
    }
    for (key, delta) in contribution.buckets {
        let pk = bucket_params(&key);
        let stored: Option<(i64, Vec<u8>, [i64; EXTRAS])> = tx
            .prepare_cached(&format!(
                "SELECT count, users, {} FROM rollups
                 WHERE site_id = ?1 AND granularity = ?2 AND event_type = ?3 AND start = ?4",
                EXTRA_NAMES.join(", ")
            ))?
            .query_row(pk, |r| {
                let mut extra = [0; EXTRAS];
                for (i, x) in extra.iter_mut().enumerate() {
                    *x = r.get(2 + i)?;
                }
                Ok((r.get(0)?, r.get(1)?, extra))
            })
            .optional()?;
        let (count, mut users, mut extra) = match stored {
            Some((count, users, extra)) => (count, Sketch::from_bytes(&users)?, extra),
            None => (0, Sketch::default(), [0; EXTRAS]),
        };
        users.merge(&delta.users);
        let count = count.saturating_add(i64::try_from(delta.count).unwrap_or(i64::MAX));
        for (x, d) in extra.iter_mut().zip(delta.extra) {
            *x = x.saturating_add(d);
        }
        let mut write =
            tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO rollups (site_id, granularity, event_type, start, count, users,
                 {})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {})",
            EXTRA_NAMES.join(", "),
            (7..7 + EXTRAS).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        ))?;
        write.raw_bind_parameter(1, pk.0)?;
        write.raw_bind_parameter(2, pk.1)?;
        write.raw_bind_parameter(3, pk.2)?;
        write.raw_bind_parameter(4, pk.3)?;
        write.raw_bind_parameter(5, count)?;
        write.raw_bind_parameter(6, users.to_bytes())?;
        for (i, x) in extra.iter().enumerate() {
            write.raw_bind_parameter(7 + i, x)?;
        }
        write.raw_execute()?;
        for (dim, top) in &delta.dims {
            let stored: Option<Vec<u8>> = tx
                .prepare_cached(
                    "SELECT summary FROM rollup_dims WHERE site_id = ?1 AND granularity = ?2
                     AND event_type = ?3 AND start = ?4 AND dim = ?5",
                )?
                .query_row(params![pk.0, pk.1, pk.2, pk.3, dim], |r| r.get(0))
                .optional()?;
            let mut summary = match stored {
                Some(bytes) => TopK::from_bytes(&bytes)?,
                None => TopK::default(),
            };
            summary.merge(top);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO rollup_dims
                 (site_id, granularity, event_type, start, dim, summary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![pk.0, pk.1, pk.2, pk.3, dim, summary.to_bytes()])?;
        }
    }
    Ok(())
}

/// A bucket's key columns: site, granularity, type, start.
fn bucket_params(key: &BucketKey) -> (&str, &'static str, &str, i64) {
    (
        &key.site_id,
        key.granularity.code(),
        &key.event_type,
        key.start,
    )
}
