//! Adding a batch to its rollup buckets, inside the move's transaction.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::Result;
use crate::rollup::sketch::Sketch;
use crate::rollup::{BucketKey, Rollup};

/// Adds each bucket's rollup, inside the move's transaction.
pub(super) fn add_to_rollups(
    tx: &Transaction<'_>,
    buckets: BTreeMap<BucketKey, Rollup>,
) -> Result<()> {
    for (key, delta) in buckets {
        let pk = params![
            key.site_id,
            key.granularity.code(),
            key.event_type,
            key.start
        ];
        let stored: Option<(i64, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT count, users FROM rollups
                 WHERE site_id = ?1 AND granularity = ?2 AND event_type = ?3 AND start = ?4",
            )?
            .query_row(pk, |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (count, mut users) = match stored {
            Some((count, users)) => (count, Sketch::from_bytes(&users)?),
            None => (0, Sketch::default()),
        };
        users.merge(&delta.users);
        let count = count.saturating_add(i64::try_from(delta.count).unwrap_or(i64::MAX));
        tx.prepare_cached(
            "INSERT OR REPLACE INTO rollups (site_id, granularity, event_type, start, count, users)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key.site_id,
            key.granularity.code(),
            key.event_type,
            key.start,
            count,
            users.to_bytes()
        ])?;
        let mut add_path = tx.prepare_cached(
            "INSERT INTO rollup_paths (site_id, granularity, event_type, start, path, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET count = count + excluded.count",
        )?;
        for (path, n) in delta.paths {
            add_path.execute(params![
                key.site_id,
                key.granularity.code(),
                key.event_type,
                key.start,
                path,
                i64::try_from(n).unwrap_or(i64::MAX)
            ])?;
        }
    }
    Ok(())
}
