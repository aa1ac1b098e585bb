//! Moving a claimed range: one transaction in `beacon.db` inserts the events new to
//! `events`, adds exactly those to the rollups, and follows their visitors' visits (the
//! states and the visit buckets, see `rollup::visits`); then the range is deleted from
//! `queue.db`. A crash between the two leaves the rows queued, and moving them again
//! inserts and counts nothing.
//!
//! The delete runs on the queue's writer while the next move's transaction runs on
//! `beacon.db`'s: under load it waits behind the queue's group commits, and a move that
//! waited for it left `beacon.db`'s writer idle for a sixth of its time (BENCHMARKS.md,
//! section 19). One delete at most is in flight: a move waits for the one before its
//! own, and so does a reading of the queue's depth. The claim is dropped only once its
//! rows are gone, so no other claim takes them meanwhile.
//!
//! Only the claimed events still queued are inserted: an erasure deletes the queue's rows
//! before `events`' (see `rights`), so a move that comes after it inserts nothing of the
//! user. Each insert says whether it added the row, so exactly those are counted. When
//! the database refuses the batch for a reason that will not go away (a constraint, a
//! value too big), it is inserted again one event at a time, each in a savepoint of its
//! own, and those refused go to `dead_letters` with the error, so that they never hold
//! back the rest.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use rusqlite::{Transaction, params};
use uuid::Uuid;

use super::codec::{EVENT_COLUMNS, parse_id};
use super::events;
use super::open::shrink;
use super::queue::count_queued;
use super::rollups::add_to_rollups;
use super::texts::Texts;
use super::{EmbeddedStore, visits};
use crate::error::sqlite_refused;
use crate::record::Claim;
use crate::rollup;
use crate::rollup::visits::{add_visits, continuations, visitors_of};
use crate::{ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreError, lock, millis};

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
        // off the writer thread.
        let claimed_rollups = rollup::rollups_of(&keys, batch.events.iter());
        let events = Arc::clone(&batch.events);
        let (inserted, dead_lettered, queued) = self
            .writer
            .run(move |file| {
                let texts = &mut file.texts;
                texts.begin();
                let mut tx = file.conn.transaction()?;
                let visitors = visitors_of(events.iter());
                let mut states = visits::load(&tx, &file.visits, &visitors)?;
                let rewrites: HashMap<Uuid, String> =
                    continuations(&events, &states).into_iter().collect();
                let rows = count_rows(&tx, &file.queue, first, last)?;
                // No row gone since the claim: every claimed event is still queued.
                let queued = match rows == claimed {
                    true => None,
                    false => Some(still_queued(&tx, &file.queue, first, last)?),
                };
                let rewritten = rewritten(&events, &rewrites);
                let candidates = candidates(&events, queued.as_ref(), &rewritten);
                // Later than the last move's, which `events::insert` relies on.
                let now = millis(Utc::now()).max(file.moved_at + 1);
                file.moved_at = now;
                let (added, dead) = match insert_all(&mut tx, texts, &candidates, now) {
                    Ok(added) => (added, 0),
                    Err(e) if sqlite_refused(&e) => {
                        texts.rolled_back();
                        let queued = match queued {
                            Some(queued) => queued,
                            None => still_queued(&tx, &file.queue, first, last)?,
                        };
                        insert_one_by_one(&mut tx, texts, &file.queue, &candidates, &queued, now)?
                    }
                    Err(e) => return Err(e.into()),
                };
                let counted: Vec<&QueuedEvent> = candidates
                    .iter()
                    .zip(&added)
                    .filter(|(_, added)| **added)
                    .map(|(e, _)| *e)
                    .collect();
                // As a rule, every claimed event is counted as it was claimed.
                let as_claimed = counted.len() == claimed && rewrites.is_empty();
                let mut contribution = if as_claimed {
                    claimed_rollups
                } else {
                    rollup::rollups_of(&keys, counted.iter().copied())
                };
                add_visits(&keys, &counted, &mut states, &mut contribution);
                add_to_rollups(&tx, std::mem::take(&mut contribution))?;
                let followed = if as_claimed {
                    visitors
                } else {
                    visitors_of(counted.iter().copied())
                };
                visits::save(&tx, &followed, &states)?;
                tx.commit()?;
                texts.committed();
                file.visits.committed(&followed, &states);
                Ok((counted.len(), dead, rows))
            })
            .await?;
        let delete = self.delete_moved(claim.token.clone(), first, last);
        let mut deleting = self.deleting.lock().await;
        wait_for(&mut deleting).await;
        *deleting = Some(tokio::spawn(delete));
        if queued < claimed {
            tracing::warn!(claimed, queued, "part of the batch had already been moved");
        }
        Ok(MoveOutcome {
            inserted,
            duplicates: queued.saturating_sub(inserted + dead_lettered),
            dead_lettered,
        })
    }

    /// Deletes the moved rows `first..=last` from the queue, then drops their claim. If
    /// the delete fails, the claim stays until its lease runs out, and the rows are moved
    /// again (adding nothing).
    fn delete_moved(
        &self,
        token: String,
        first: i64,
        last: i64,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (queue, writer, claims) = (
            self.queue.clone(),
            self.queue_writer.clone(),
            Arc::clone(&self.claims),
        );
        async move {
            let deleted = writer
                .run(move |file| {
                    let tx = file.conn.transaction()?;
                    let sql = format!("DELETE FROM \"{queue}\" WHERE seq BETWEEN ?1 AND ?2");
                    let removed = tx.prepare_cached(&sql)?.execute(params![first, last])?;
                    count_queued(&tx, &queue, -(removed as i64))?;
                    tx.commit()?;
                    shrink(&file.conn)?;
                    Ok(())
                })
                .await;
            match deleted {
                Ok(()) => {
                    lock(&claims).remove(&token);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "moved rows were not deleted from the queue: they will be moved again, adding nothing");
                }
            }
        }
    }

    /// Waits for the delete of the last move's rows, if one is in flight.
    pub(super) async fn settle_deletes(&self) {
        wait_for(&mut *self.deleting.lock().await).await;
    }
}

/// Waits for the delete in `slot`, if any, and empties it. The delete logs its own
/// failure.
async fn wait_for(slot: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(delete) = slot.take() {
        let _ = delete.await;
    }
}

/// How many queue rows are still in `first..=last` (an erasure since the claim may have
/// deleted some; a copy sent twice is two rows).
fn count_rows(tx: &Transaction<'_>, queue: &str, first: i64, last: i64) -> Result<usize> {
    let n: i64 = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2"
        ))?
        .query_row(params![first, last], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or_default())
}

/// The queue rows still in `first..=last`, by event id.
fn still_queued(
    tx: &Transaction<'_>,
    queue: &str,
    first: i64,
    last: i64,
) -> Result<HashMap<Uuid, i64>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT event_id, seq FROM q.\"{queue}\" WHERE seq BETWEEN ?1 AND ?2"
    ))?;
    let rows = stmt.query_map(params![first, last], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut queued = HashMap::new();
    for row in rows {
        let (id, seq) = row?;
        queued.insert(parse_id(&id)?, seq);
    }
    Ok(queued)
}

/// The claimed events that continue a visit of the day before, under the user they are
/// counted for (see `continuations`): usually none.
fn rewritten(
    events: &[QueuedEvent],
    rewrites: &HashMap<Uuid, String>,
) -> HashMap<Uuid, QueuedEvent> {
    let rewrite = |e: &QueuedEvent| {
        let user = rewrites.get(&e.event_id)?;
        let e = QueuedEvent {
            user_id: Some(user.clone()),
            ..e.clone()
        };
        Some((e.event_id, e))
    };
    events.iter().filter_map(rewrite).collect()
}

/// The claimed events to insert: those still queued (all when `queued` is `None`), each
/// once (a batch may hold a copy twice), as `rewritten` if there. In the order of
/// `events`' key, so that rows that go next to each other are written together and
/// pages fill up. By reference: an event is hundreds of bytes, too many to move while
/// sorting.
fn candidates<'a>(
    events: &'a [QueuedEvent],
    queued: Option<&HashMap<Uuid, i64>>,
    rewritten: &'a HashMap<Uuid, QueuedEvent>,
) -> Vec<&'a QueuedEvent> {
    let mut seen: HashSet<Uuid, ahash::RandomState> = HashSet::default();
    let mut candidates = events
        .iter()
        .filter(|e| queued.is_none_or(|q| q.contains_key(&e.event_id)) && seen.insert(e.event_id))
        .map(|e| rewritten.get(&e.event_id).unwrap_or(e))
        .collect::<Vec<_>>();
    candidates.sort_by(|a, b| {
        (&a.site_id, a.timestamp, a.event_id).cmp(&(&b.site_id, b.timestamp, b.event_id))
    });
    candidates
}

/// Inserts every candidate in one savepoint; answers which were new.
fn insert_all(
    tx: &mut Transaction<'_>,
    texts: &mut Texts,
    candidates: &[&QueuedEvent],
    now: i64,
) -> rusqlite::Result<Vec<bool>> {
    let attempt = tx.savepoint()?;
    let added = events::insert(&attempt, texts, candidates, now)?;
    attempt.commit()?;
    Ok(added)
}

/// Inserts the candidates one at a time, each in a savepoint: those the database refuses
/// for good go to `dead_letters`, with the error, and are logged once. Answers which
/// were new, and how many were dead-lettered.
fn insert_one_by_one(
    tx: &mut Transaction<'_>,
    texts: &mut Texts,
    queue: &str,
    candidates: &[&QueuedEvent],
    queued: &HashMap<Uuid, i64>,
    now: i64,
) -> Result<(Vec<bool>, usize)> {
    let mut added = Vec::with_capacity(candidates.len());
    let mut dead = 0;
    for e in candidates {
        let one = tx.savepoint()?;
        match events::insert(&one, texts, &[*e], now) {
            Ok(new) => {
                one.commit()?;
                added.extend(new);
            }
            Err(err) if sqlite_refused(&err) => {
                drop(one); // rolls the attempt back
                texts.rolled_back();
                // Every candidate is still queued (see `candidates`).
                let seq = queued.get(&e.event_id).copied().unwrap_or_default();
                dead_letter(tx, queue, seq, &err.to_string(), now)?;
                added.push(false);
                dead += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok((added, dead))
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
