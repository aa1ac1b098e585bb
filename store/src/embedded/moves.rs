//! Moving a claimed range: one transaction in `beacon.db` inserts the events new to
//! `events` and adds exactly those to the rollups; then the range is deleted from
//! `queue.db`. A crash between the two leaves the rows queued, and moving them again
//! inserts and counts nothing.

use chrono::Utc;
use rusqlite::{Transaction, params};

use super::EmbeddedStore;
use super::codec::EVENT_COLUMNS;
use super::rollups::add_to_rollups;
use crate::record::Claim;
use crate::rollup::{self, Counted};
use crate::{ClaimedBatch, MoveOutcome, Result, StoreError, lock, millis};

/// An inserted event's rollup fields: site, type, path, user, timestamp.
type CountedRow = (String, String, Option<String>, Option<String>, i64);

impl EmbeddedStore {
    /// Moves a claimed range (see the module doc). A batch whose claim is gone (moved already, or taken
    /// over by another worker after its lease) has nothing to do.
    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        let Claim::Embedded(claim) = &batch.claim else {
            return Err(StoreError::Config(
                "a batch claimed elsewhere was moved on the embedded store".to_owned(),
            ));
        };
        let claimed = batch.len();
        let range = lock(&self.claims)
            .get(&claim.token)
            .map(|c| (c.first, c.last));
        let Some((first, last)) = range else {
            return Ok(MoveOutcome::default());
        };
        // Usually every claimed event is new: their rollups are worked out here, off the
        // writer thread, and the insert need not say which rows it added.
        let claimed_rollups = rollup::rollups_of(batch.events.iter().map(Counted::from));
        let inserted = self
            .write(move |conn, queue| {
                let mut tx = conn.transaction()?;
                let attempt = tx.savepoint()?;
                let n = attempt
                    .prepare_cached(&insert_from_queue(queue, ""))?
                    .execute(params![first, last, millis(Utc::now())])?;
                // The range holds at most the claimed rows (rows only ever leave it), so
                // inserting as many means every claimed event was new.
                let inserted = if n == claimed {
                    attempt.commit()?;
                    add_to_rollups(&tx, claimed_rollups)?;
                    claimed
                } else {
                    drop(attempt); // rolls the attempt back
                    insert_new_and_count(&tx, queue, first, last)?
                };
                tx.commit()?;
                Ok(inserted)
            })
            .await?;
        let queue = self.queue.clone();
        let removed = self
            .queue_writer
            .run(move |file| {
                let sql = format!("DELETE FROM \"{queue}\" WHERE seq BETWEEN ?1 AND ?2");
                Ok(file
                    .conn
                    .prepare_cached(&sql)?
                    .execute(params![first, last])?)
            })
            .await?;
        lock(&self.claims).remove(&claim.token);
        if removed < claimed {
            tracing::warn!(claimed, removed, "part of the batch had already been moved");
        }
        Ok(MoveOutcome {
            inserted,
            duplicates: removed.saturating_sub(inserted),
        })
    }
}

/// Copies queue rows `?1..=?2` into `events`, skipping those there already, with
/// `processed_at` `?3`.
fn insert_from_queue(queue: &str, returning: &str) -> String {
    format!(
        "INSERT INTO events ({EVENT_COLUMNS}, processed_at)
         SELECT {EVENT_COLUMNS}, ?3 FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2
         ON CONFLICT(event_id) DO NOTHING {returning}"
    )
}

/// Inserts the range's events that are not in `events` yet and adds exactly those to
/// the rollups: the path for a batch moved in part already, or holding a copy twice.
fn insert_new_and_count(tx: &Transaction<'_>, queue: &str, first: i64, last: i64) -> Result<usize> {
    // RETURNING gives the events new to `events`: exactly those count.
    let inserted: Vec<CountedRow> = tx
        .prepare_cached(&insert_from_queue(
            queue,
            "RETURNING site_id, event_type, path, user_id, timestamp",
        ))?
        .query_map(params![first, last, millis(Utc::now())], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    add_to_rollups(
        tx,
        rollup::rollups_of(inserted.iter().map(
            |(site_id, event_type, path, user_id, timestamp)| Counted {
                site_id,
                event_type,
                path: path.as_deref(),
                user_id: user_id.as_deref(),
                timestamp: *timestamp,
            },
        )),
    )?;
    Ok(inserted.len())
}
