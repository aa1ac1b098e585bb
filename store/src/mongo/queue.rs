//! Enqueueing: the group-commit sink that writes the queue, and how full the queue is.
//!
//! Each group is written into one batch held by this process (see `desk`), which the
//! writer then releases, and only then answers: so every acknowledged event is in a
//! released batch, which workers move. If the write or the release fails or outlives
//! the write timeout, the answer is an error and the batch stays unreleased: when its
//! lease runs out, the worker that finds it discards its events. An error therefore
//! means that nothing is stored, even if part of the write landed.
//!
//! A group is written as few queue documents as fit (see [`pack`]), not one an event:
//! each document costs the database an insert, two index entries and a delete, which
//! were most of its work per event. So the queue does not refuse an event sent twice;
//! the move does, by the events' unique id, and a claim drops copies within a batch.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};

use super::claim::released;
use super::codec::{count_bson, count_field, refused_documents, to_queue_doc};
use super::desk::{BatchDesk, ENQUEUER};
use super::{MongoStore, check_ready};
use crate::group::Sink;
use crate::{QueueStatus, QueuedEvent, Refusal, Result, StoreError, from_millis};

/// Writes groups into the queue, from the writer's task.
pub(crate) struct QueueSink {
    queue: Collection<Document>,
    batches: Collection<Document>,
    desk: Arc<BatchDesk>,
    ready: Arc<AtomicBool>,
    write_timeout: Duration,
}

impl QueueSink {
    pub(super) fn new(
        queue: Collection<Document>,
        batches: Collection<Document>,
        desk: Arc<BatchDesk>,
        ready: Arc<AtomicBool>,
        write_timeout: Duration,
    ) -> Self {
        Self {
            queue,
            batches,
            desk,
            ready,
            write_timeout,
        }
    }

    /// Inserts the group into a held batch, then releases it (see the module doc).
    async fn write_batch(&self, docs: Vec<Document>) -> Result<Vec<Refusal>> {
        check_ready(&self.ready)?;
        let batch = match self.desk.spare() {
            Ok(batch) => batch,
            Err(fresh) => self.desk.record(fresh).await?,
        };
        let count = docs.len();
        let (packed, firsts) = pack(docs, &batch);
        let refused: Vec<Refusal> = match self.queue.insert_many(packed).ordered(false).await {
            Ok(_) => Vec::new(),
            // A document refused refuses the events in it, and only those.
            Err(e) => refused_documents(e)?
                .into_iter()
                .flat_map(|(doc, _, reason)| {
                    let end = firsts.get(doc + 1).copied().unwrap_or(count);
                    let first = firsts.get(doc).copied().unwrap_or(end);
                    (first..end).map(move |index| Refusal {
                        index,
                        reason: reason.clone(),
                    })
                })
                .collect(),
        };
        let released = self
            .batches
            .update_one(
                doc! { "_id": &batch, "owner": ENQUEUER },
                doc! { "$set": {
                    "owner": "", "until": released(),
                    "events": count_bson((count - refused.len()) as u64),
                } },
            )
            .await?;
        if released.matched_count == 0 {
            // Its lease ran out during the write, and a worker has discarded it.
            return Err(StoreError::Unavailable(
                "the write took longer than the claim lease".to_owned(),
            ));
        }
        Ok(refused)
    }
}

impl Sink for QueueSink {
    async fn write(&mut self, events: &[&QueuedEvent]) -> Result<Vec<Refusal>> {
        let docs = events.iter().map(|e| to_queue_doc(e)).collect();
        let timeout = self.write_timeout;
        tokio::time::timeout(timeout, self.write_batch(docs))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "MongoDB did not take the events within {} ms",
                    timeout.as_millis()
                ))
            })?
    }
}

impl MongoStore {
    /// Queues `events` through the writer (group commit).
    pub(crate) async fn enqueue(
        &self,
        events: Vec<QueuedEvent>,
        deadline: std::time::Instant,
    ) -> Result<Vec<Refusal>> {
        self.writer.enqueue(events, deadline).await
    }

    /// The depth as the batches' counts add up (one small document a group, so this
    /// reads far fewer documents than there are events); the oldest event by batch id,
    /// which is a UUIDv7 and so in the order batches were recorded (the queue's index).
    pub(crate) async fn queue_status(&self) -> Result<QueueStatus> {
        self.check_ready()?;
        let depth = self
            .batches
            .aggregate([doc! { "$group": { "_id": Bson::Null, "n": { "$sum": "$events" } } }])
            .await?
            .try_next()
            .await?
            .map_or(0, |d| count_field(&d, "n"));
        let oldest: Option<Document> = self
            .queue
            .find(doc! {})
            .sort(doc! { "batch": 1 })
            .projection(doc! { FIRST_AT: 1, "ingested_at": 1 })
            .limit(1)
            .await?
            .try_next()
            .await?;
        // An earlier version queued one document an event, with its own `ingested_at`.
        let oldest = oldest
            .and_then(|d| {
                d.get_datetime(FIRST_AT)
                    .or_else(|_| d.get_datetime("ingested_at"))
                    .ok()
                    .copied()
            })
            .map(|t| from_millis(t.timestamp_millis()))
            .transpose()?;
        Ok(QueueStatus { depth, oldest })
    }
}

/// The queue document's field holding its events.
const EVENTS: &str = "events";

/// The events a queue document holds: a group's, or (as an earlier version queued
/// them, one document an event) the document itself.
pub(super) fn events_in(d: &Document) -> Result<Vec<&Document>> {
    match d.get_array(EVENTS) {
        Ok(packed) => packed
            .iter()
            .map(|e| {
                e.as_document().ok_or_else(|| {
                    StoreError::Corrupt(format!("a queued event is not a document: {e}"))
                })
            })
            .collect(),
        Err(_) => Ok(vec![d]),
    }
}

/// Matches the queue documents holding an event that `filter` matches, in a group or
/// (as an earlier version queued them) alone.
pub(super) fn holding(filter: &Document) -> Document {
    doc! { "$or": [{ EVENTS: { "$elemMatch": filter.clone() } }, filter.clone()] }
}

/// Takes the events that `filter` matches out of the queue's groups, and deletes those
/// queued alone by an earlier version.
pub(super) async fn pull_events(queue: &Collection<Document>, filter: &Document) -> Result<()> {
    queue
        .update_many(
            doc! { EVENTS: { "$elemMatch": filter.clone() } },
            doc! { "$pull": { EVENTS: filter.clone() } },
        )
        .await?;
    queue.delete_many(filter.clone()).await?;
    Ok(())
}
/// The queue document's field holding its first event's `ingested_at`.
const FIRST_AT: &str = "first_at";
/// Most bytes of events in one queue document, counted roughly (see [`rough_len`]):
/// far below MongoDB's 16 MB limit on a document, whatever the estimate misses.
const PACK_BYTES: usize = 4 * 1024 * 1024;

/// The group's events as queue documents labelled with `batch`, as few as fit under
/// [`PACK_BYTES`]; and the index of each document's first event.
fn pack(docs: Vec<Document>, batch: &str) -> (Vec<Document>, Vec<usize>) {
    let mut packed = Vec::new();
    let mut firsts = Vec::new();
    let mut current: Vec<Document> = Vec::new();
    let mut bytes = 0;
    for (index, d) in docs.into_iter().enumerate() {
        let len = rough_len(&d);
        if !current.is_empty() && bytes + len > PACK_BYTES {
            packed.push(queue_doc(std::mem::take(&mut current), batch));
            bytes = 0;
        }
        if current.is_empty() {
            firsts.push(index);
        }
        bytes += len;
        current.push(d);
    }
    if !current.is_empty() {
        packed.push(queue_doc(current, batch));
    }
    (packed, firsts)
}

fn queue_doc(events: Vec<Document>, batch: &str) -> Document {
    let first_at = events
        .first()
        .and_then(|e| e.get("ingested_at").cloned())
        .unwrap_or(Bson::Null);
    doc! { "batch": batch, FIRST_AT: first_at, EVENTS: events }
}

/// An event document's size, give or take its fields' framing: its texts, and a
/// generous allowance for each field.
fn rough_len(d: &Document) -> usize {
    d.iter()
        .map(|(key, value)| key.len() + 16 + value.as_str().map_or(0, str::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text_bytes: usize) -> Document {
        doc! { "_id": "id", "props": "x".repeat(text_bytes) }
    }

    #[test]
    fn a_group_is_one_document_until_it_would_pass_the_size_bound() {
        let (packed, firsts) = pack(vec![event(10), event(10), event(10)], "b");
        assert_eq!((packed.len(), firsts), (1, vec![0]));
        assert_eq!(packed[0].get_str("batch"), Ok("b"));
        let events = packed[0].get_array(EVENTS).expect("events");
        assert_eq!(events.len(), 3);
        assert!(
            events[0]
                .as_document()
                .is_some_and(|e| !e.contains_key("batch")),
            "the batch is the document's, not each event's"
        );

        let third = PACK_BYTES / 3;
        let (packed, firsts) = pack((0..7).map(|_| event(third)).collect(), "b");
        assert_eq!(firsts, vec![0, 2, 4, 6]);
        let sizes: Vec<usize> = packed
            .iter()
            .map(|d| d.get_array(EVENTS).map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, vec![2, 2, 2, 1]);
        // One event bigger than the bound still goes, alone.
        let (packed, firsts) = pack(vec![event(10), event(PACK_BYTES), event(10)], "b");
        assert_eq!((packed.len(), firsts), (3, vec![0, 1, 2]));
    }
}
