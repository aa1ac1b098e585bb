//! Group commit, for both backends: concurrent enqueues share one durable write.
//!
//! Every store has one [`Writer`] for its queue: a thread that owns the queue's write
//! side (the backend's [`Sink`]). Callers send their events over a bounded channel and
//! wait for the answer. The thread takes whatever requests are waiting, up to
//! [`MAX_GROUP_EVENTS`] events, writes them with one call to the sink, and only then
//! answers each request. A lone request is written at once; under load the groups grow
//! by themselves, which turns thousands of small writes per second into a few large
//! ones. When the last group held several requests, the thread first waits the sink's
//! [`Sink::GATHER`] for more (the embedded store's fsync is cheap next to a round trip,
//! so there a short wait makes much larger groups; BENCHMARKS.md has the figures).
//!
//! A dedicated thread rather than a task: under load it finds the next group already
//! waiting and never parks, and it can sleep for less than the async timer's
//! millisecond. MongoDB's sink runs its async write on the thread with the runtime's
//! `block_on`. Between groups the thread also runs other jobs on the sink (the embedded
//! store deletes moved rows with its one queue connection).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{QueuedEvent, Result, StoreError};

/// Most events written in one group.
pub(crate) const MAX_GROUP_EVENTS: usize = 5000;
/// Jobs waiting for the thread before senders wait too.
const CHANNEL_JOBS: usize = 4096;

/// The write side of a queue.
pub(crate) trait Sink: Send + 'static {
    /// How long a group waits for more requests while several arrive at once.
    const GATHER: Duration;

    /// Writes `events` durably. On an error some may have been written; writing them
    /// again must then store each once.
    fn write(&mut self, events: &mut dyn Iterator<Item = &QueuedEvent>) -> Result<()>;
}

type Work<S> = Box<dyn FnOnce(&mut S) + Send>;

enum Job<S> {
    Enqueue {
        events: Vec<QueuedEvent>,
        done: oneshot::Sender<Result<()>>,
    },
    Run(Work<S>),
}

/// The handle to a writer thread. Cheap to clone; the thread ends, dropping its sink,
/// once every handle is dropped.
pub(crate) struct Writer<S> {
    jobs: mpsc::Sender<Job<S>>,
}

impl<S> Clone for Writer<S> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Writer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<S: Sink> Writer<S> {
    /// Starts a thread called `name` to own `sink`.
    pub(crate) fn start(name: &str, sink: S) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel(CHANNEL_JOBS);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serve(sink, inbox))
            .map_err(|e| StoreError::Task(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Queues `events`, written together with whatever else is waiting.
    pub(crate) async fn enqueue(&self, events: Vec<QueuedEvent>) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Job::Enqueue { events, done }).await?;
        wait.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the thread's sink, between groups.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, wait) = oneshot::channel();
        self.send(Job::Run(Box::new(move |sink| {
            let _ = done.send(f(sink));
        })))
        .await?;
        wait.await.map_err(|_| stopped())?
    }

    async fn send(&self, job: Job<S>) -> Result<()> {
        self.jobs.send(job).await.map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::Task("the store's writer thread stopped".to_owned())
}

fn serve<S: Sink>(mut sink: S, mut inbox: mpsc::Receiver<Job<S>>) {
    let mut next = None;
    let mut concurrent = false;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match inbox.blocking_recv() {
                Some(job) => job,
                None => return, // every handle dropped: the store is closed
            },
        };
        match job {
            Job::Run(work) => guarded(|| work(&mut sink)),
            Job::Enqueue { events, done } => {
                let mut count = events.len();
                let mut group = vec![(events, done)];
                if concurrent && !S::GATHER.is_zero() {
                    // Asleep rather than waiting on the channel: senders then need not
                    // wake the thread once per request.
                    std::thread::sleep(S::GATHER);
                }
                while count < MAX_GROUP_EVENTS {
                    match inbox.try_recv().ok() {
                        Some(Job::Enqueue { events, done }) => {
                            count += events.len();
                            group.push((events, done));
                        }
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                concurrent = group.len() > 1;
                guarded(|| commit(&mut sink, group));
            }
        }
    }
}

/// Writes a group at once. If that fails for a reason other than the database being
/// unavailable, each request is written alone, so that each gets its own answer and one
/// bad request cannot fail the others.
fn commit<S: Sink>(sink: &mut S, group: Vec<(Vec<QueuedEvent>, oneshot::Sender<Result<()>>)>) {
    if group.len() > 1 {
        let mut all = group.iter().flat_map(|(events, _)| events);
        match sink.write(&mut all) {
            Ok(()) => {
                for (_, done) in group {
                    let _ = done.send(Ok(()));
                }
                return;
            }
            Err(e) if e.is_unavailable() => {
                let message = e.to_string();
                for (_, done) in group {
                    let _ = done.send(Err(StoreError::Unavailable(message.clone())));
                }
                return;
            }
            Err(_) => {}
        }
    }
    for (events, done) in group {
        let _ = done.send(sink.write(&mut events.iter()));
    }
}

/// A panic drops the job's answer channel (its caller gets an error); the thread
/// carries on with the next job.
fn guarded(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("a store write panicked; its transaction was rolled back");
    }
}
