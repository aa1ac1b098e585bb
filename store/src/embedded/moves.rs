//! Moving a claimed range: one transaction in `beacon.db` inserts the events new to
//! `events` and adds exactly those to the rollups; then the range is deleted from
//! `queue.db`. A crash between the two leaves the rows queued, and moving them again
//! inserts and counts nothing.
//!
//! Three ways to insert, cheapest first:
//! - all at once, when every claimed event is new (the usual case): the rollups come
//!   from the claimed events, worked out before the transaction;
//! - all at once with `RETURNING`, when some were stored already (a batch moved in part,
//!   or holding a copy twice): exactly the returned rows count;
//! - one by one, when the database refuses the batch for a reason that will not go away
//!   (a constraint, a value too big): each event in a savepoint of its own, and those
//!   refused go to `dead_letters` with the error, so that they never hold back the rest.

use chrono::Utc;
use rusqlite::{Transaction, params};

use super::EmbeddedStore;
use super::codec::EVENT_COLUMNS;
use super::queue::count_queued;
use super::rollups::add_to_rollups;
use crate::error::sqlite_refused;
use crate::record::Claim;
use crate::rollup::hash::Keys;
use crate::rollup::{self, Counted};
use crate::{ClaimedBatch, MoveOutcome, Result, StoreError, lock, millis};

/// An inserted event's rollup fields: site, type, path, user, timestamp.
type CountedRow = (String, String, Option<String>, Option<String>, i64);
/// What an insert returns for the rollups.
const RETURNING: &str = "RETURNING site_id, event_type, path, user_id, timestamp";

impl EmbeddedStore {
    /// Moves a claimed range (see the module doc). A batch whose claim is gone (moved
    /// already, or taken over by another worker after its lease) has nothing to do.
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
        let keys = self.keys;
        // Usually every claimed event is new: their rollups are worked out here, off the
        // writer thread, and the insert need not say which rows it added.
        let claimed_rollups = rollup::rollups_of(&keys, batch.events.iter().map(Counted::from));
        let (inserted, dead_lettered) = self
            .write(move |conn, queue| {
                let mut tx = conn.transaction()?;
                let attempt = tx.savepoint()?;
                let all_at_once = attempt
                    .prepare_cached(&insert_from_queue(queue, ""))
                    .and_then(|mut s| s.execute(params![first, last, millis(Utc::now())]));
                // The range holds at most the claimed rows (rows only ever leave it), so
                // inserting as many means every claimed event was new.
                let moved = match all_at_once {
                    Ok(n) if n == claimed => {
                        attempt.commit()?;
                        add_to_rollups(&tx, claimed_rollups)?;
                        (claimed, 0)
                    }
                    Ok(_) => {
                        drop(attempt); // rolls the attempt back
                        (insert_new_and_count(&tx, &keys, queue, first, last)?, 0)
                    }
                    Err(e) if sqlite_refused(&e) => {
                        drop(attempt);
                        insert_one_by_one(&mut tx, &keys, queue, first, last)?
                    }
                    Err(e) => return Err(e.into()),
                };
                tx.commit()?;
                Ok(moved)
            })
            .await?;
        let queue = self.queue.clone();
        let removed = self
            .queue_writer
            .run(move |file| {
                let tx = file.conn.transaction()?;
                let sql = format!("DELETE FROM \"{queue}\" WHERE seq BETWEEN ?1 AND ?2");
                let removed = tx.prepare_cached(&sql)?.execute(params![first, last])?;
                count_queued(&tx, &queue, -(removed as i64))?;
                tx.commit()?;
                Ok(removed)
            })
            .await?;
        lock(&self.claims).remove(&claim.token);
        if removed < claimed {
            tracing::warn!(claimed, removed, "part of the batch had already been moved");
        }
        Ok(MoveOutcome {
            inserted,
            duplicates: removed.saturating_sub(inserted + dead_lettered),
            dead_lettered,
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
fn insert_new_and_count(
    tx: &Transaction<'_>,
    keys: &Keys,
    queue: &str,
    first: i64,
    last: i64,
) -> Result<usize> {
    // RETURNING gives the events new to `events`: exactly those count.
    let inserted: Vec<CountedRow> = tx
        .prepare_cached(&insert_from_queue(queue, RETURNING))?
        .query_map(params![first, last, millis(Utc::now())], counted_row)?
        .collect::<rusqlite::Result<_>>()?;
    add_counted(tx, keys, &inserted)?;
    Ok(inserted.len())
}

/// Inserts the range's events one at a time, each in a savepoint: those the database
/// refuses for good go to `dead_letters`, with the error, and are logged once. Answers
/// how many were inserted and how many dead-lettered.
fn insert_one_by_one(
    tx: &mut Transaction<'_>,
    keys: &Keys,
    queue: &str,
    first: i64,
    last: i64,
) -> Result<(usize, usize)> {
    let seqs: Vec<i64> = tx
        .prepare_cached(&format!(
            "SELECT seq FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
        ))?
        .query_map(params![first, last], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut inserted: Vec<CountedRow> = Vec::new();
    let mut dead = 0;
    let now = millis(Utc::now());
    for seq in seqs {
        let one = tx.savepoint()?;
        let result: rusqlite::Result<Vec<CountedRow>> = one
            .prepare_cached(&insert_from_queue(queue, RETURNING))
            .and_then(|mut s| s.query_map(params![seq, seq, now], counted_row)?.collect());
        match result {
            Ok(rows) => {
                one.commit()?;
                inserted.extend(rows);
            }
            Err(e) if sqlite_refused(&e) => {
                drop(one); // rolls the attempt back
                dead_letter(tx, queue, seq, &e.to_string(), now)?;
                dead += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    add_counted(tx, keys, &inserted)?;
    Ok((inserted.len(), dead))
}

/// Copies queue row `seq` into `dead_letters` with `error`, and logs it.
fn dead_letter(tx: &Transaction<'_>, queue: &str, seq: i64, error: &str, now: i64) -> Result<()> {
    let event_id: Option<String> = tx
        .prepare_cached(&format!(
            "INSERT INTO dead_letters ({EVENT_COLUMNS}, error, failed_at)
             SELECT {EVENT_COLUMNS}, ?2, ?3 FROM q.\"{queue}\" WHERE seq = ?1
             ON CONFLICT(event_id) DO NOTHING RETURNING event_id"
        ))?
        .query_row(params![seq, error, now], |r| r.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if let Some(event_id) = event_id {
        tracing::error!(%event_id, error, "the database refused an event for good: it is in dead_letters");
    }
    Ok(())
}

fn counted_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CountedRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// Adds the inserted rows to the rollups.
fn add_counted(tx: &Transaction<'_>, keys: &Keys, rows: &[CountedRow]) -> Result<()> {
    add_to_rollups(
        tx,
        rollup::rollups_of(
            keys,
            rows.iter()
                .map(|(site_id, event_type, path, user_id, timestamp)| Counted {
                    site_id,
                    event_type,
                    path: path.as_deref(),
                    user_id: user_id.as_deref(),
                    timestamp: *timestamp,
                }),
        ),
    )
}
