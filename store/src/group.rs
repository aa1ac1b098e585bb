//! Group commit, for both backends: concurrent enqueues share one durable write.
//!
//! Every store has one [`Writer`] for its queue: a thread that owns the queue's write
//! side (the backend's [`Sink`]). Callers send their events over a bounded channel and
//! wait for the answer. The thread takes whatever requests are waiting, up to
//! [`MAX_GROUP_EVENTS`] events, writes them with one call to the sink, and only then
//! answers each request. A lone request is written at once; under load the groups grow
//! by themselves, which turns thousands of small writes per second into a few large
//! ones: what arrives while one group is written makes the next, so the slower the
//! disk or the database, the larger the groups. The thread never waits for more
//! requests than are there: a wait of 100 µs made larger groups, but fewer requests
//! per second (BENCHMARKS.md, section 13).
//!
//! Every request carries a deadline. The thread never starts writing a request whose
//! deadline has passed, or whose caller has stopped waiting: that request is answered
//! `DeadlinePassed`, and nothing of it is stored. So a caller that gave up (and answered
//! `503`) can be sure its events will not appear later.
//!
//! The loop is one future, run where its sink's writes belong. SQLite's writes block, so
//! the embedded store runs it on a dedicated thread ([`Writer::start`]), which under
//! load finds the next group already waiting and never parks. MongoDB's writes are
//! async, so it runs as a task on the runtime ([`Writer::spawn`]): on a thread of its
//! own, every write woke that thread from the runtime's I/O and back, which cost the
//! server a tenth of its CPU (BENCHMARKS.md, section 17). Between groups the loop also
//! runs other jobs on the sink (the embedded store deletes moved rows with its one
//! queue connection).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{QueuedEvent, Refusal, Result, StoreError};

/// Most events written in one group.
pub(crate) const MAX_GROUP_EVENTS: usize = 5000;
/// Jobs waiting for the thread before senders wait too.
const CHANNEL_JOBS: usize = 4096;

/// The write side of a queue.
pub(crate) trait Sink: Send + 'static {
    /// Writes `events` durably, and answers which of them the database refused for
    /// good (by index in `events`). On an error nothing is stored: what may have been
    /// written is never moved.
    fn write(
        &mut self,
        events: &[&QueuedEvent],
    ) -> impl Future<Output = Result<Vec<Refusal>>> + Send;
}

type Work<S> = Box<dyn FnOnce(&mut S) + Send>;

/// One caller's events, and where to answer.
struct Request {
    events: Vec<QueuedEvent>,
    deadline: Instant,
    done: oneshot::Sender<Result<Vec<Refusal>>>,
}

enum Job<S> {
    Enqueue(Request),
    Run(Work<S>),
}

/// The handle to a writer (a thread or a task). Cheap to clone; the writer ends,
/// dropping its sink, once every handle is dropped.
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
    /// Starts a thread called `name` to own `sink`, whose writes block.
    pub(crate) fn start(name: &str, sink: S) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel(CHANNEL_JOBS);
        let cannot =
            |e: std::io::Error| StoreError::Task(format!("cannot start the writer thread: {e}"));
        // Parks as `blocking_recv` does: `futures`' executor cost a twentieth of the
        // embedded store's single events (BENCHMARKS.md, section 17).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(cannot)?;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || runtime.block_on(serve(sink, inbox)))
            .map_err(cannot)?;
        Ok(Self { jobs })
    }

    /// Starts a task on the current runtime to own `sink`, whose writes are async.
    pub(crate) fn spawn(sink: S) -> Self {
        let (jobs, inbox) = mpsc::channel(CHANNEL_JOBS);
        tokio::spawn(serve(sink, inbox));
        Self { jobs }
    }

    /// Queues `events`, written together with whatever else is waiting, unless
    /// `deadline` passes first.
    pub(crate) async fn enqueue(
        &self,
        events: Vec<QueuedEvent>,
        deadline: Instant,
    ) -> Result<Vec<Refusal>> {
        let (done, wait) = oneshot::channel();
        let request = Request {
            events,
            deadline,
            done,
        };
        match tokio::time::timeout_at(deadline.into(), self.send(Job::Enqueue(request))).await {
            Ok(sent) => sent?,
            Err(_) => return Err(StoreError::DeadlinePassed),
        }
        wait.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the writer's sink, between groups.
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
    StoreError::Task("the store's writer stopped".to_owned())
}

async fn serve<S: Sink>(mut sink: S, mut inbox: mpsc::Receiver<Job<S>>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match inbox.recv().await {
                Some(job) => job,
                None => return, // every handle dropped: the store is closed
            },
        };
        match job {
            Job::Run(work) => guarded(async { work(&mut sink) }).await,
            Job::Enqueue(first) => {
                let mut count = first.events.len();
                let mut group = vec![first];
                while count < MAX_GROUP_EVENTS {
                    match inbox.try_recv().ok() {
                        Some(Job::Enqueue(request)) => {
                            count += request.events.len();
                            group.push(request);
                        }
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                guarded(commit(&mut sink, group)).await;
            }
        }
    }
}

/// Writes a group at once, leaving out requests whose deadline passed. If the write
/// fails for a reason other than the database being unavailable, each request is
/// written alone, so that each gets its own answer and one bad request cannot fail the
/// others.
async fn commit<S: Sink>(sink: &mut S, group: Vec<Request>) {
    let now = Instant::now();
    let (group, late): (Vec<Request>, Vec<Request>) = group
        .into_iter()
        .partition(|r| r.deadline > now && !r.done.is_closed());
    for request in late {
        let _ = request.done.send(Err(StoreError::DeadlinePassed));
    }
    if group.len() > 1 {
        let all: Vec<&QueuedEvent> = group.iter().flat_map(|r| &r.events).collect();
        match sink.write(&all).await {
            Ok(refused) => return answer(group, &refused),
            Err(e) if e.is_unavailable() => {
                let message = e.to_string();
                for request in group {
                    let _ = request
                        .done
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
                return;
            }
            Err(_) => {}
        }
    }
    for request in group {
        let events: Vec<&QueuedEvent> = request.events.iter().collect();
        let _ = request.done.send(sink.write(&events).await);
    }
}

/// Answers each request of a group written at once with its own refusals, renumbered
/// from the group's indexes to the request's.
fn answer(group: Vec<Request>, refused: &[Refusal]) {
    let mut first = 0;
    for request in group {
        let end = first + request.events.len();
        let own = refused
            .iter()
            .filter(|r| (first..end).contains(&r.index))
            .map(|r| Refusal {
                index: r.index - first,
                reason: r.reason.clone(),
            })
            .collect();
        first = end;
        let _ = request.done.send(Ok(own));
    }
}

/// A panic drops the job's answer channel (its caller gets an error); the loop carries
/// on with the next job.
async fn guarded(job: impl Future<Output = ()>) {
    if AssertUnwindSafe(job).catch_unwind().await.is_err() {
        tracing::error!("a store write panicked; its transaction was rolled back");
    }
}
