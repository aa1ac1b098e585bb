//! Enqueueing: the group-commit sink that writes the queue, and the queue's depth.
//!
//! Each group is written into one batch held by this process (see `desk`), which is
//! released in the background once its events are in. A writer that dies before
//! releasing leaves a lease; when it runs out, a worker takes over whatever was written.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::runtime::Handle;

use super::codec::{only_duplicate_keys, to_queue_doc};
use super::desk::BatchDesk;
use super::{MongoStore, check_ready};
use crate::group::Sink;
use crate::{QueuedEvent, Result};

/// Writes groups into the queue, on the writer thread.
pub(crate) struct QueueSink {
    queue: Collection<Document>,
    desk: Arc<BatchDesk>,
    ready: Arc<AtomicBool>,
    /// The runtime the store was opened on, which drives the driver's I/O.
    runtime: Handle,
}

impl QueueSink {
    /// Must be called on the runtime that will drive the writes.
    pub(super) fn new(
        queue: Collection<Document>,
        desk: Arc<BatchDesk>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            queue,
            desk,
            ready,
            runtime: Handle::current(),
        }
    }

    async fn write_batch(&self, docs: Vec<Document>, count: u64) -> Result<()> {
        check_ready(&self.ready)?;
        let batch = match self.desk.spare() {
            Some(batch) => batch,
            None => self.desk.record().await?,
        };
        let docs = docs.into_iter().map(|mut d| {
            d.insert("batch", &batch);
            d
        });
        match self.queue.insert_many(docs).ordered(false).await {
            Ok(_) => {}
            Err(e) if only_duplicate_keys(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.desk.release(batch, count);
        Ok(())
    }
}

impl Sink for QueueSink {
    /// None: a group already waits a round trip, during which the next one gathers.
    const GATHER: Duration = Duration::ZERO;

    fn write(&mut self, events: &mut dyn Iterator<Item = &QueuedEvent>) -> Result<()> {
        let docs: Vec<Document> = events.map(to_queue_doc).collect();
        let count = docs.len() as u64;
        self.runtime.block_on(self.write_batch(docs, count))
    }
}

impl MongoStore {
    /// Queues `events` through the writer thread (group commit).
    pub(crate) async fn enqueue(&self, events: Vec<QueuedEvent>) -> Result<()> {
        self.writer.enqueue(events).await
    }

    /// Waits until every batch this process queued has been released.
    pub(crate) async fn settle(&self) {
        self.desk.settle().await;
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64> {
        self.check_ready()?;
        Ok(self.queue.count_documents(doc! {}).await?)
    }
}
