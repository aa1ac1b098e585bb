//! The client handle that `track()` is called on, and the state it shares with the
//! background sender.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beacon_protocol::{ErrorBody, Event, Stats, StatsQuery};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::builder::{ClientBuilder, Settings};
use crate::metrics::{Counters, Metrics};
use crate::sender::Command;
use crate::{Error, Track};

/// State shared by the client handles and the background sender.
#[derive(Debug)]
pub(crate) struct Shared {
    pub buffer: Mutex<VecDeque<Event>>,
    pub batch_ready: Notify,
    pub counters: Counters,
    pub closed: AtomicBool,
    /// When a shutdown must be over; set once, by the first shutdown.
    pub deadline: Mutex<Option<Instant>>,
    /// Wakes a waiting send when the deadline is set.
    pub wake: Notify,
    pub settings: Settings,
    /// `POST /events`.
    pub events_url: reqwest::Url,
    /// `GET /stats`.
    pub stats_url: reqwest::Url,
    /// `POST /api/v2/query`.
    pub query_url: reqwest::Url,
    pub http: reqwest::Client,
}

impl Shared {
    /// Stops taking events and sets the shutdown deadline (if none is set yet), waking
    /// a send that is waiting, so that it gives up at the deadline rather than after its
    /// retries.
    pub fn begin_close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        {
            let mut deadline = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
            deadline.get_or_insert_with(|| Instant::now() + self.settings.shutdown_timeout);
        }
        self.wake.notify_waiters();
    }

    /// The shutdown deadline, once shutting down.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once shutting down and past the deadline; never otherwise.
    pub async fn deadline_reached(&self) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(deadline) = self.deadline() {
                tokio::time::sleep_until(deadline).await;
                return;
            }
            notified.await;
        }
    }

    /// Takes up to one batch from the front of the buffer.
    pub fn take_batch(&self) -> Vec<Event> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let n = buffer.len().min(self.settings.batch_size);
        buffer.drain(..n).collect()
    }

    pub fn buffered(&self) -> usize {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How long past the shutdown deadline `shutdown()` waits for the sender to count what
/// it dropped.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// Closes the sender when the last [`Client`] clone is dropped.
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) site_id: String,
    pub(crate) user_id: Option<String>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Only a message: the sender flushes what it can within the shutdown timeout, on
        // its own task, so dropping never blocks the caller's thread.
        let _ = self.commands.send(Command::Close(None));
    }
}

/// The Beacon client. Cheap to clone; all clones share one buffer and one sender.
///
/// ```no_run
/// # async fn demo() -> Result<(), beacon::Error> {
/// let client = beacon::Client::builder("http://localhost:1000").site_id("site-001").build()?;
/// client.page_view("/home");
/// client.click("/pricing", "buy-button");
/// client.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) handle: Arc<Handle>,
}

impl Client {
    /// Starts configuring a client for the server at `base_url`; see [`ClientBuilder`].
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), beacon::Error> {
    /// let client = beacon::Client::builder("http://localhost:1000").site_id("site-001").build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url.into())
    }

    /// Records a page view. Never blocks, never fails.
    ///
    /// ```no_run
    /// # fn demo(client: &beacon::Client) {
    /// client.page_view("/pricing");
    /// # }
    /// ```
    pub fn page_view(&self, path: impl Into<String>) {
        self.track(crate::event("page_view").path(path));
    }

    /// Records a click on `target` (an element id, a link) on the page at `path`. The
    /// target travels as the `target` property.
    ///
    /// ```no_run
    /// # fn demo(client: &beacon::Client) {
    /// client.click("/pricing", "buy-button");
    /// # }
    /// ```
    pub fn click(&self, path: impl Into<String>, target: impl Into<String>) {
        self.track(
            crate::event("click")
                .path(path)
                .prop("target", target.into()),
        );
    }

    /// Records any event. It goes into a bounded buffer; when the buffer is full the
    /// oldest event is dropped and counted in [`Client::dropped`].
    ///
    /// ```no_run
    /// # fn demo(client: &beacon::Client) {
    /// client.track(beacon::event("checkout").path("/cart").user("user123").prop("total", 42));
    /// # }
    /// ```
    pub fn track(&self, event: Track) {
        let handle = &*self.handle;
        let shared = &*handle.shared;
        if shared.closed.load(Ordering::Relaxed) {
            shared
                .counters
                .dropped_overflow
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = event.into_event(&handle.site_id, handle.user_id.as_deref());
        let len = {
            let mut buffer = shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
            if buffer.len() >= shared.settings.capacity {
                buffer.pop_front();
                shared
                    .counters
                    .dropped_overflow
                    .fetch_add(1, Ordering::Relaxed);
            }
            buffer.push_back(event);
            buffer.len()
        };
        if len == shared.settings.batch_size {
            shared.batch_ready.notify_one();
        }
    }

    /// Sends everything buffered now, and waits until it was delivered or given up on,
    /// or until the shutdown timeout has passed, whichever comes first. Events tracked
    /// meanwhile are sent on the next tick, not waited for.
    ///
    /// ```no_run
    /// # async fn demo(client: beacon::Client) {
    /// client.page_view("/home");
    /// client.flush().await; // e.g. before a short-lived job exits
    /// # }
    /// ```
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        let upto = self.buffered();
        let command = Command::Flush { done, upto };
        if self.handle.commands.send(command).is_ok() {
            // Events still being retried stay buffered; the sender goes on with them.
            let timeout = self.handle.shared.settings.shutdown_timeout;
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }

    /// Stops accepting events and sends what is buffered, within the shutdown timeout,
    /// even if a send is being retried. What is left then is dropped and counted, as are
    /// events tracked afterwards.
    ///
    /// ```no_run
    /// # async fn demo(client: beacon::Client) {
    /// client.shutdown().await;
    /// assert_eq!(client.buffered(), 0);
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let shared = &self.handle.shared;
        shared.begin_close();
        let (done, wait) = oneshot::channel();
        if self
            .handle
            .commands
            .send(Command::Close(Some(done)))
            .is_ok()
        {
            let deadline = shared.deadline().unwrap_or_else(Instant::now) + CLOSE_GRACE;
            let _ = tokio::time::timeout_at(deadline, wait).await;
        }
    }

    /// Events dropped so far, for any reason: buffer overflow, undeliverable, rejected.
    ///
    /// ```no_run
    /// # fn demo(client: &beacon::Client) {
    /// println!("analytics events lost so far: {}", client.dropped());
    /// # }
    /// ```
    pub fn dropped(&self) -> u64 {
        let m = self.metrics();
        m.dropped_overflow + m.dropped_undeliverable + m.rejected
    }

    /// What became of the events tracked so far.
    pub fn metrics(&self) -> Metrics {
        self.handle.shared.counters.snapshot()
    }

    /// Events waiting to be sent.
    ///
    /// ```no_run
    /// # fn demo(client: &beacon::Client) {
    /// println!("{} events waiting", client.buffered());
    /// # }
    /// ```
    pub fn buffered(&self) -> usize {
        self.handle.shared.buffered()
    }

    /// Asks the server for stats, as `GET /stats` answers them.
    ///
    /// ```no_run
    /// # async fn demo(client: beacon::Client) -> Result<(), beacon::Error> {
    /// let mut query = beacon::StatsQuery::new("site-001");
    /// query.limit = Some(5);
    /// let stats = client.stats(&query).await?;
    /// println!("{} events from {} users", stats.total_events, stats.unique_users);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self, query: &StatsQuery) -> Result<Stats, Error> {
        let shared = &self.handle.shared;
        let mut url = shared.stats_url.clone();
        url.set_query(Some(&serde_urlencoded::to_string(query)?));
        self.read(shared.http.get(url)).await
    }

    /// Sends a read (with the read key, if set) and decodes its answer, or its error.
    pub(crate) async fn read<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Error> {
        let settings = &self.handle.shared.settings;
        let mut request = request.timeout(settings.request_timeout);
        if let Some(key) = &settings.read_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let body: ErrorBody = response.json().await.unwrap_or_else(|_| ErrorBody {
            error: "unknown".to_owned(),
            message: status.to_string(),
        });
        Err(Error::Api {
            status,
            code: body.error,
            message: body.message,
        })
    }

    /// The shared state, for the query API's file.
    pub(crate) fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}
