//! Group commit: concurrent requests share one write to the queue.
//!
//! On MongoDB, handlers hand their events to one writer task. The writer takes whatever
//! requests are waiting (up to [`MAX_GROUP_EVENTS`]), writes them to the store in one
//! call, and only then answers each request. Nothing waits artificially: a lone request
//! is written at once, and under load the groups grow by themselves, which turns
//! thousands of small writes per second into a few large ones. One writer, not several:
//! it makes the largest groups, and on secantusd-rs (2 cores, CPU-bound) the most
//! throughput. Single events ran at 17,550 req/s with one writer, 15,434 with two and
//! 13,338 with four, measured one after another.
//!
//! The embedded store groups the same way on its own writer thread, which owns SQLite's
//! one write connection, so requests go straight to it: a hop through a task here would
//! only add a thread wake-up per group.

use beacon_store::{QueuedEvent, Store};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, with_timeout};

/// Most events written in one store call.
pub const MAX_GROUP_EVENTS: usize = 5000;

/// A request's events, and where to say they are queued.
#[derive(Debug)]
pub struct Job {
    events: Vec<QueuedEvent>,
    done: oneshot::Sender<Result<(), ()>>,
}

/// The handle handlers submit events through. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Ingest {
    /// Through the writer task (MongoDB).
    Grouped(mpsc::Sender<Job>),
    /// Straight to a store that groups writes itself (embedded).
    Direct(Store),
}

impl Ingest {
    /// Starts the writer task for MongoDB; the embedded store needs none.
    pub fn start(store: Store) -> Self {
        if !store.is_shared() {
            return Self::Direct(store);
        }
        let (jobs, inbox) = mpsc::channel(4096);
        tokio::spawn(write_groups(store, inbox));
        Self::Grouped(jobs)
    }

    /// Queues `events` durably, sharing the write with concurrent requests. Returns once
    /// the store acknowledged them.
    pub async fn submit(&self, events: Vec<QueuedEvent>) -> Result<(), ApiError> {
        if events.is_empty() {
            return Ok(());
        }
        let jobs = match self {
            Self::Grouped(jobs) => jobs,
            Self::Direct(store) => {
                return with_timeout(store.enqueue(events)).await;
            }
        };
        let (done, wait) = oneshot::channel();
        jobs.send(Job { events, done })
            .await
            .map_err(|_| ApiError::Unavailable)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(ApiError::Unavailable),
        }
    }
}

async fn write_groups(store: Store, mut inbox: mpsc::Receiver<Job>) {
    while let Some(first) = inbox.recv().await {
        let mut count = first.events.len();
        let mut group = vec![first];
        while count < MAX_GROUP_EVENTS {
            match inbox.try_recv() {
                Ok(job) => {
                    count += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(count);
        let mut waiting = Vec::with_capacity(group.len());
        for job in group {
            events.extend(job.events);
            waiting.push(job.done);
        }
        let result = with_timeout(store.enqueue(events)).await.map_err(|_| ());
        for done in waiting {
            let _ = done.send(result);
        }
    }
}
