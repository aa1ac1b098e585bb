//! Enqueueing: the group-commit sink that writes the queue, and how full the queue is.
//!
//! Each group is written into one batch held by this process (see `desk`), which the
//! writer then releases, and only then answers: so every acknowledged event is in a
//! released batch, which workers move. If the write or the release fails or outlives
//! the write timeout, the answer is an error and the batch stays unreleased: when its
//! lease runs out, the worker that finds it discards its events. An error therefore
//! means that nothing is stored, even if part of the write landed.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::runtime::Handle;

use super::claim::released;
use super::codec::{DUPLICATE_KEY, count_bson, refused_documents, to_queue_doc};
use super::desk::{BatchDesk, ENQUEUER};
use super::{MongoStore, check_ready};
use crate::group::Sink;
use crate::{QueueStatus, QueuedEvent, Refusal, Result, StoreError, from_millis};

/// Writes groups into the queue, on the writer thread.
pub(crate) struct QueueSink {
    queue: Collection<Document>,
    batches: Collection<Document>,
    desk: Arc<BatchDesk>,
    ready: Arc<AtomicBool>,
    write_timeout: Duration,
    /// The runtime the store was opened on, which drives the driver's I/O.
    runtime: Handle,
}

impl QueueSink {
    /// Must be called on the runtime that will drive the writes.
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
            runtime: Handle::current(),
        }
    }

    /// Inserts the group into a held batch, then releases it (see the module doc).
    async fn write_batch(&self, mut docs: Vec<Document>) -> Result<Vec<Refusal>> {
        check_ready(&self.ready)?;
        let batch = match self.desk.spare() {
            Some(batch) => batch,
            None => self.desk.record().await?,
        };
        for d in &mut docs {
            d.insert("batch", &batch);
        }
        let count = docs.len();
        let refused: Vec<Refusal> = match self.queue.insert_many(docs).ordered(false).await {
            Ok(_) => Vec::new(),
            // A duplicate key is an event queued already: what the caller wanted.
            Err(e) => refused_documents(e)?
                .into_iter()
                .filter(|(_, code, _)| *code != DUPLICATE_KEY)
                .map(|(index, _, reason)| Refusal { index, reason })
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
    fn write(&mut self, events: &[&QueuedEvent]) -> Result<Vec<Refusal>> {
        let docs = events.iter().map(|e| to_queue_doc(e)).collect();
        let timeout = self.write_timeout;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.write_batch(docs))
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "MongoDB did not take the events within {} ms",
                        timeout.as_millis()
                    ))
                })?
        })
    }
}

impl MongoStore {
    /// Queues `events` through the writer thread (group commit).
    pub(crate) async fn enqueue(
        &self,
        events: Vec<QueuedEvent>,
        deadline: std::time::Instant,
    ) -> Result<Vec<Refusal>> {
        self.writer.enqueue(events, deadline).await
    }

    /// The depth from the collection's metadata; the oldest event by batch id, which is
    /// a UUIDv7 and so in the order batches were recorded (the queue's one index).
    pub(crate) async fn queue_status(&self) -> Result<QueueStatus> {
        self.check_ready()?;
        let depth = self.queue.estimated_document_count().await?;
        let oldest: Option<Document> = self
            .queue
            .find(doc! {})
            .sort(doc! { "batch": 1 })
            .projection(doc! { "ingested_at": 1 })
            .limit(1)
            .await?
            .try_next()
            .await?;
        let oldest = oldest
            .and_then(|d| d.get_datetime("ingested_at").ok().copied())
            .map(|t| from_millis(t.timestamp_millis()))
            .transpose()?;
        Ok(QueueStatus { depth, oldest })
    }
}
