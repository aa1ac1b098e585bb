//! Moving a claimed range: one transaction in `beacon.db` inserts the events new to
//! `events`, adds exactly those to the rollups, and follows their visitors' visits (the
//! states and the visit buckets, see `rollup::visits`); then the range is deleted from
//! `queue.db`. A crash between the two leaves the rows queued, and moving them again
//! inserts and counts nothing.
//!
//! Three ways to insert, cheapest first:
//! - all at once, when every claimed event is new (the usual case): the event rollups
//!   come from the claimed events, worked out before the transaction;
//! - all at once with `RETURNING`, when some were stored already (a batch moved in part,
//!   or holding a copy twice): exactly the returned rows count;
//! - one by one, when the database refuses the batch for a reason that will not go away
//!   (a constraint, a value too big): each event in a savepoint of its own, and those
//!   refused go to `dead_letters` with the error, so that they never hold back the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use rusqlite::{Transaction, params};
use uuid::Uuid;

use super::EmbeddedStore;
use super::codec::EVENT_COLUMNS;
use super::queue::count_queued;
use super::rollups::add_to_rollups;
use super::visits;
use crate::error::sqlite_refused;
use crate::record::Claim;
use crate::rollup::visits::{add_visits, continuations, visitors_of};
use crate::rollup::{self, Contribution};
use crate::{ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreError, lock, millis};

/// What an insert returns: the ids of the rows it added.
const RETURNING: &str = "RETURNING event_id";

/// Which claimed events an insert added: all of them, or those with these ids.
enum Inserted {
    All,
    Some(HashSet<String>),
}

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
        // Usually every claimed event is new: their event rollups are worked out here,
        // off the writer thread, and the insert need not say which rows it added.
        let claimed_rollups = rollup::rollups_of(&keys, batch.events.iter());
        let events = Arc::clone(&batch.events);
        let (inserted, dead_lettered) = self
            .write(move |conn, queue| {
                let mut tx = conn.transaction()?;
                let mut states = visits::load(&tx, &visitors_of(events.iter()))?;
                let rewrites: HashMap<Uuid, String> =
                    continuations(&events, &states).into_iter().collect();
                let attempt = tx.savepoint()?;
                let all_at_once = attempt
                    .prepare_cached(&insert_from_queue(queue, ""))
                    .and_then(|mut s| s.execute(params![first, last, millis(Utc::now())]));
                // The range holds at most the claimed rows (rows only ever leave it), so
                // inserting as many means every claimed event was new.
                let (inserted, dead) = match all_at_once {
                    Ok(n) if n == claimed => {
                        attempt.commit()?;
                        (Inserted::All, 0)
                    }
                    Ok(_) => {
                        drop(attempt); // rolls the attempt back
                        (insert_new(&tx, queue, first, last)?, 0)
                    }
                    Err(e) if sqlite_refused(&e) => {
                        drop(attempt);
                        insert_one_by_one(&mut tx, queue, first, last)?
                    }
                    Err(e) => return Err(e.into()),
                };
                let counted = counted_events(&events, &inserted, &rewrites);
                take_over_visits(&tx, &counted, &rewrites)?;
                let mut contribution = match inserted {
                    Inserted::All if rewrites.is_empty() => claimed_rollups,
                    _ => rollup::rollups_of(&keys, counted.iter().map(AsRef::as_ref)),
                };
                follow_visits(&tx, &keys, &counted, &mut states, &mut contribution)?;
                tx.commit()?;
                Ok((counted.len(), dead))
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

/// The claimed events that were inserted, each under the user it is counted for.
fn counted_events<'a>(
    events: &'a [QueuedEvent],
    inserted: &Inserted,
    rewrites: &HashMap<Uuid, String>,
) -> Vec<std::borrow::Cow<'a, QueuedEvent>> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| match inserted {
            Inserted::All => true,
            Inserted::Some(ids) => ids.contains(&e.event_id.to_string()),
        })
        // A batch holding a copy twice inserted it once.
        .filter(|e| seen.insert(e.event_id))
        .map(|e| match rewrites.get(&e.event_id) {
            Some(user) => std::borrow::Cow::Owned(QueuedEvent {
                user_id: Some(user.clone()),
                ..e.clone()
            }),
            None => std::borrow::Cow::Borrowed(e),
        })
        .collect()
}

/// Stores the events that continue a visit of the day before under that day's id.
fn take_over_visits(
    tx: &Transaction<'_>,
    counted: &[std::borrow::Cow<'_, QueuedEvent>],
    rewrites: &HashMap<Uuid, String>,
) -> Result<()> {
    if rewrites.is_empty() {
        return Ok(());
    }
    let mut update = tx.prepare_cached("UPDATE events SET user_id = ?2 WHERE event_id = ?1")?;
    for e in counted {
        if let Some(user) = rewrites.get(&e.event_id) {
            update.execute(params![e.event_id.to_string(), user])?;
        }
    }
    Ok(())
}

/// Adds the visits of `counted` to `contribution`, then the contribution to the
/// rollups, and saves the visitors' states.
fn follow_visits(
    tx: &Transaction<'_>,
    keys: &crate::rollup::hash::Keys,
    counted: &[std::borrow::Cow<'_, QueuedEvent>],
    states: &mut HashMap<crate::rollup::visits::Visitor, crate::rollup::visits::VisitState>,
    contribution: &mut Contribution,
) -> Result<()> {
    let events: Vec<&QueuedEvent> = counted.iter().map(AsRef::as_ref).collect();
    add_visits(keys, &events, states, contribution);
    add_to_rollups(tx, std::mem::take(contribution))?;
    visits::save(tx, &visitors_of(events.iter().copied()), states)
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

/// Inserts the range's events that are not in `events` yet: the path for a batch moved
/// in part already, or holding a copy twice. `RETURNING` says which were new.
fn insert_new(tx: &Transaction<'_>, queue: &str, first: i64, last: i64) -> Result<Inserted> {
    let ids: HashSet<String> = tx
        .prepare_cached(&insert_from_queue(queue, RETURNING))?
        .query_map(params![first, last, millis(Utc::now())], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Inserted::Some(ids))
}

/// Inserts the range's events one at a time, each in a savepoint: those the database
/// refuses for good go to `dead_letters`, with the error, and are logged once. Answers
/// how many were inserted and how many dead-lettered.
fn insert_one_by_one(
    tx: &mut Transaction<'_>,
    queue: &str,
    first: i64,
    last: i64,
) -> Result<(Inserted, usize)> {
    let seqs: Vec<i64> = tx
        .prepare_cached(&format!(
            "SELECT seq FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
        ))?
        .query_map(params![first, last], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut inserted: HashSet<String> = HashSet::new();
    let mut dead = 0;
    let now = millis(Utc::now());
    for seq in seqs {
        let one = tx.savepoint()?;
        let result: rusqlite::Result<Vec<String>> = one
            .prepare_cached(&insert_from_queue(queue, RETURNING))
            .and_then(|mut s| s.query_map(params![seq, seq, now], |r| r.get(0))?.collect());
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
    Ok((Inserted::Some(inserted), dead))
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
