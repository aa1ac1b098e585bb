//! Group commit: concurrent requests share one write to the queue.
//!
//! Handlers hand their events to a few writer tasks. A writer takes whatever requests are
//! waiting (up to [`MAX_GROUP_EVENTS`]), writes them to the store in one call, and only
//! then answers each request. Nothing waits artificially: a lone request is written at
//! once, and under load the groups grow by themselves, which turns thousands of small
//! writes per second into a few large ones.

use beacon_store::{QueuedEvent, Store};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::{ApiError, with_timeout};

/// Most events written in one store call.
pub const MAX_GROUP_EVENTS: usize = 5000;
#[derive(Debug)]
struct Job {
    events: Vec<QueuedEvent>,
    done: oneshot::Sender<Result<(), ()>>,
}

/// The handle handlers submit events through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the writers: several for MongoDB, which takes concurrent writes well, and
    /// one for the embedded store, whose writes are serialized anyway.
    pub fn start(store: Store) -> Self {
        let writers = if store.is_shared() { 4 } else { 1 };
        let (jobs, inbox) = mpsc::channel(4096);
        let inbox = Arc::new(Mutex::new(inbox));
        for _ in 0..writers {
            tokio::spawn(write_groups(store.clone(), Arc::clone(&inbox)));
        }
        Self { jobs }
    }

    /// Queues `events` durably, sharing the write with concurrent requests. Returns once
    /// the store acknowledged them.
    pub async fn submit(&self, events: Vec<QueuedEvent>) -> Result<(), ApiError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job { events, done })
            .await
            .map_err(|_| ApiError::Unavailable)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(ApiError::Unavailable),
        }
    }
}

async fn write_groups(store: Store, inbox: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut group = Vec::new();
        let mut count = 0;
        {
            let mut inbox = inbox.lock().await;
            let Some(first) = inbox.recv().await else {
                return; // the server is shutting down
            };
            count += first.events.len();
            group.push(first);
            while count < MAX_GROUP_EVENTS {
                match inbox.try_recv() {
                    Ok(job) => {
                        count += job.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
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
