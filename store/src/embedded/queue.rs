//! The queue: enqueueing (the group-commit sink, on the queue's writer thread), claims
//! and how full the queue is.
//!
//! A claim is a range of queue rows above every live claim, or a live claim whose lease
//! ran out, taken over whole. Claims live in memory: one process owns the file, and
//! after a restart every queued event is unclaimed again, which is safe because moving
//! is idempotent. Claiming is then a read, and costs the writers nothing.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::{OptionalExtension, params};

use super::codec::{
    EVENT_COLUMN_COUNT, EVENT_COLUMNS, Inserts, ROWS_PER_INSERT, bind_event, read_event, values,
};
use super::{EmbeddedStore, SqliteFile};
use crate::group::Sink;
use crate::record::Claim;
use crate::{
    ClaimedBatch, QueueStatus, QueuedEvent, Refusal, Result, from_millis, lock, new_claim_token,
};

/// A worker's claim: queue rows `first..=last` (by `seq`), until its lease ends.
#[derive(Debug)]
pub(super) struct RangeClaim {
    pub(super) first: i64,
    pub(super) last: i64,
    until: Instant,
}

/// The key of a live claim, which the batch carries.
#[derive(Debug)]
pub(crate) struct EmbeddedClaim {
    pub(super) token: String,
}

impl Sink for SqliteFile {
    /// One transaction, one fsync: all or nothing. Rows go many to a statement
    /// ([`Inserts`]), which costs SQLite less per row than a statement each.
    async fn write(&mut self, events: &[&QueuedEvent]) -> Result<Vec<Refusal>> {
        let tx = self.conn.transaction()?;
        self.inserts.run(
            &tx,
            events,
            |insert, first, e| -> Result<()> {
                bind_event(insert, first, e)?;
                insert.raw_bind_parameter(first + EVENT_COLUMN_COUNT, &e.continues)?;
                Ok(())
            },
            |insert, _| -> Result<()> {
                insert.raw_execute()?;
                Ok(())
            },
        )?;
        count_queued(&tx, &self.queue, events.len() as i64)?;
        tx.commit()?;
        Ok(Vec::new())
    }
}

/// Most events a claim makes room for before reading: as many as the largest batch the
/// worker allows, so that a caller's larger `max` reserves no memory the rows may not fill.
const RESERVED_EVENTS: usize = 100_000;

/// The queue's columns an insert sets: [`EVENT_COLUMNS`], then `continues`.
const QUEUE_COLUMN_COUNT: usize = EVENT_COLUMN_COUNT + 1;
// SQLite's limit on parameters, checked when compiling.
const _: () = assert!(ROWS_PER_INSERT * QUEUE_COLUMN_COUNT <= 32_766);

/// The queue's inserts (see [`Inserts`]), made once when the store opens.
pub(super) fn queue_inserts(queue: &str) -> Inserts {
    Inserts::new(QUEUE_COLUMN_COUNT, |rows| {
        format!(
            "INSERT INTO \"{queue}\" ({EVENT_COLUMNS}, continues) VALUES {}",
            values(QUEUE_COLUMN_COUNT, rows)
        )
    })
}

/// Adds `n` (or subtracts) to the queue's count, inside the transaction that wrote or
/// deleted the rows.
pub(super) fn count_queued(conn: &rusqlite::Connection, queue: &str, n: i64) -> Result<()> {
    conn.prepare_cached("UPDATE queue_counts SET n = n + ?1 WHERE name = ?2")?
        .execute(params![n, queue])?;
    Ok(())
}

impl EmbeddedStore {
    /// Queues `events` through the queue's writer thread (group commit).
    pub(crate) async fn enqueue(
        &self,
        events: Vec<QueuedEvent>,
        deadline: Instant,
    ) -> Result<Vec<Refusal>> {
        self.queue_writer.enqueue(events, deadline).await
    }

    /// Claims the oldest unclaimed events (see the module doc).
    pub(crate) async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        let token = new_claim_token();
        let claims = Arc::clone(&self.claims);
        let lease = self.claim_lease;
        let claim_token = token.clone();
        // Measured before the lease is taken, so this worker's view ends no later.
        let lease_ends = Instant::now() + lease;
        let events = self
            .read(move |conn, queue| {
                // Held while reading, so that two claims cannot pick the same rows.
                let mut claims = lock(&claims);
                let now = Instant::now();
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT seq, {EVENT_COLUMNS}, continues FROM q.\"{queue}\"
                     WHERE seq BETWEEN ?1 AND ?2
                     ORDER BY seq LIMIT ?3"
                ))?;
                let (events, seqs) = loop {
                    let expired = claims.iter().find(|(_, c)| c.until <= now);
                    let expired = expired.map(|(token, _)| token.clone());
                    let taken_over = expired.and_then(|token| claims.remove(&token));
                    let (first, last, limit) = match &taken_over {
                        Some(old) => (old.first, old.last, i64::MAX),
                        None => {
                            let above = claims.values().map(|c| c.last).max().unwrap_or(0);
                            let limit = i64::try_from(max).unwrap_or(i64::MAX);
                            (above.saturating_add(1), i64::MAX, limit)
                        }
                    };
                    // Sized for the batch up front: events are hundreds of bytes, too
                    // many to copy while a vector grows.
                    let mut events = Vec::with_capacity(max.min(RESERVED_EVENTS));
                    let mut seqs = None;
                    let mut rows = stmt.query(params![first, last, limit])?;
                    while let Some(row) = rows.next()? {
                        let seq: i64 = row.get(0)?;
                        let continues = row.get(1 + EVENT_COLUMN_COUNT)?;
                        events.push(read_event(row, 1).map(|e| QueuedEvent { continues, ..e }));
                        seqs = Some((seqs.map_or(seq, |(first, _)| first), seq));
                    }
                    // An expired claim whose rows are all moved is just dropped.
                    if !(events.is_empty() && taken_over.is_some()) {
                        break (events, seqs);
                    }
                };
                if let Some((first, last)) = seqs {
                    let claim = RangeClaim {
                        first,
                        last,
                        until: now + lease,
                    };
                    claims.insert(claim_token, claim);
                }
                events.into_iter().collect::<Result<Vec<_>>>()
            })
            .await?;
        if events.is_empty() {
            return Ok(ClaimedBatch::nothing());
        }
        Ok(ClaimedBatch {
            more_waiting: events.len() >= max,
            events: events.into(),
            claim: Claim::Embedded(EmbeddedClaim { token }),
            lease_ends,
        })
    }

    /// The depth is counted in `queue_counts`, in the same transactions that add and
    /// delete rows, so reading it costs one row however deep the queue; the oldest row
    /// is the first by `seq`. A move's delete in flight is waited for, so that the rows
    /// of a finished move are never counted.
    pub(crate) async fn queue_status(&self) -> Result<QueueStatus> {
        self.settle_deletes().await;
        let (depth, oldest): (i64, Option<i64>) = self
            .read(|conn, queue| {
                let depth = conn
                    .prepare_cached("SELECT n FROM q.queue_counts WHERE name = ?1")?
                    .query_row([queue], |r| r.get(0))?;
                let oldest = conn
                    .prepare_cached(&format!(
                        "SELECT ingested_at FROM q.\"{queue}\" ORDER BY seq LIMIT 1"
                    ))?
                    .query_row([], |r| r.get(0))
                    .optional()?;
                Ok((depth, oldest))
            })
            .await?;
        Ok(QueueStatus {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest: oldest.map(from_millis).transpose()?,
        })
    }
}
