use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beacon_protocol::{ErrorBody, Event, Stats, StatsQuery};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::sender::{self, Command};
use crate::{Error, Track};

/// What the client has done with the events it was given. Counters only grow.
///
/// ```no_run
/// # fn demo(client: &beacon::Client) {
/// let m = client.metrics();
/// if m.dropped_overflow > 0 {
///     eprintln!("analytics buffer overflowed {} times: raise queue_capacity", m.dropped_overflow);
/// }
/// # }
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Events acknowledged by the server.
    pub delivered: u64,
    /// Oldest events dropped because the buffer was full.
    pub dropped_overflow: u64,
    /// Events given up on after the retry limit, or refused by the server as a whole.
    pub dropped_undeliverable: u64,
    /// Events the server rejected one by one (invalid); resending would not help.
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub delivered: AtomicU64,
    pub dropped_overflow: AtomicU64,
    pub dropped_undeliverable: AtomicU64,
    pub rejected: AtomicU64,
}

/// Settings the background sender needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub events_url: reqwest::Url,
    pub stats_url: reqwest::Url,
    pub flush_interval: Duration,
    pub batch_size: usize,
    pub max_batch_bytes: usize,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_retry_after: Duration,
    pub gzip: bool,
    pub shutdown_timeout: Duration,
}

/// State shared by the client handles and the background sender.
#[derive(Debug)]
pub(crate) struct Shared {
    pub buffer: Mutex<VecDeque<Event>>,
    pub capacity: usize,
    pub batch_ready: Notify,
    pub counters: Counters,
    pub closed: AtomicBool,
    pub settings: Settings,
    pub http: reqwest::Client,
}

impl Shared {
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

/// Closes the sender when the last [`Client`] clone is dropped.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    site_id: String,
    user_id: Option<String>,
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
    handle: Arc<Handle>,
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
            if buffer.len() >= shared.capacity {
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

    /// Sends everything buffered now, and waits until it was delivered or given up on.
    ///
    /// ```no_run
    /// # async fn demo(client: beacon::Client) {
    /// client.page_view("/home");
    /// client.flush().await; // e.g. before a short-lived job exits
    /// # }
    /// ```
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.handle.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops accepting events and sends what is buffered, within the shutdown timeout.
    /// Events tracked afterwards are dropped and counted.
    ///
    /// ```no_run
    /// # async fn demo(client: beacon::Client) {
    /// client.shutdown().await;
    /// assert_eq!(client.buffered(), 0);
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self
            .handle
            .commands
            .send(Command::Close(Some(done)))
            .is_ok()
        {
            let _ = wait.await;
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
        let c = &self.handle.shared.counters;
        Metrics {
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_overflow: c.dropped_overflow.load(Ordering::Relaxed),
            dropped_undeliverable: c.dropped_undeliverable.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
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
        let mut url = shared.settings.stats_url.clone();
        url.set_query(Some(&serde_urlencoded::to_string(query)?));
        let response = shared
            .http
            .get(url)
            .timeout(shared.settings.request_timeout)
            .send()
            .await?;
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
}

/// Configures a [`Client`]. Every setting has a default that suits a busy server app.
///
/// ```no_run
/// use std::time::Duration;
/// # fn demo() -> Result<(), beacon::Error> {
/// let client = beacon::Client::builder("https://beacon.example.com")
///     .site_id("site-001")
///     .user_id("user123")
///     .flush_interval(Duration::from_millis(500))
///     .batch_size(200)
///     .max_batch_bytes(256 * 1024)
///     .queue_capacity(50_000)
///     .request_timeout(Duration::from_secs(5))
///     .max_retries(8)
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .max_retry_after(Duration::from_secs(30))
///     .gzip(true)
///     .shutdown_timeout(Duration::from_secs(2))
///     .http_client(reqwest::Client::new())
///     .build()?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    site_id: Option<String>,
    user_id: Option<String>,
    capacity: usize,
    http: Option<reqwest::Client>,
    settings: SettingsDraft,
}

#[derive(Debug, Clone)]
struct SettingsDraft {
    flush_interval: Duration,
    batch_size: usize,
    max_batch_bytes: usize,
    request_timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
    gzip: bool,
    shutdown_timeout: Duration,
}

impl ClientBuilder {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            site_id: None,
            user_id: None,
            capacity: 10_000,
            http: None,
            settings: SettingsDraft {
                flush_interval: Duration::from_secs(1),
                batch_size: 100,
                max_batch_bytes: 512 * 1024,
                request_timeout: Duration::from_secs(10),
                max_retries: 5,
                backoff_base: Duration::from_millis(200),
                backoff_max: Duration::from_secs(30),
                max_retry_after: Duration::from_secs(60),
                gzip: true,
                shutdown_timeout: Duration::from_secs(5),
            },
        }
    }

    /// The site every event belongs to (required).
    pub fn site_id(mut self, site_id: impl Into<String>) -> Self {
        self.site_id = Some(site_id.into());
        self
    }

    /// The user for events that do not name one.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// How often buffered events are sent (default 1 s).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.settings.flush_interval = interval;
        self
    }

    /// Events per request (default 100; the server takes at most 1,000). A full batch is
    /// sent at once, without waiting for the interval.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.settings.batch_size = events;
        self
    }

    /// Largest request body before compression (default 512 KB; the server takes 1 MB).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_batch_bytes = bytes;
        self
    }

    /// Most events buffered (default 10,000); past it the oldest are dropped.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.capacity = events;
        self
    }

    /// Longest wait for one request (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Retries of a failed batch before it is dropped (default 5).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.settings.max_retries = retries;
        self
    }

    /// Exponential backoff bounds: first retry within `base`, never more than `max`
    /// (defaults 200 ms and 30 s). Each wait is drawn at random below the bound.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.settings.backoff_base = base;
        self.settings.backoff_max = max;
        self
    }

    /// Cap on how long a server's `Retry-After` may make the client wait (default 60 s).
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.settings.max_retry_after = cap;
        self
    }

    /// Gzip request bodies (default on).
    pub fn gzip(mut self, on: bool) -> Self {
        self.settings.gzip = on;
        self
    }

    /// How long [`Client::shutdown`] (or dropping the client) keeps trying to send what
    /// is buffered (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// The HTTP client to use, for proxies, TLS roots or connection pools of your own.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Starts the client and its background sender: on the current tokio runtime if
    /// there is one, otherwise on a small runtime of its own thread.
    pub fn build(self) -> Result<Client, Error> {
        let site_id = self
            .site_id
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| Error::Config("site_id is required".to_owned()))?;
        let mut base = reqwest::Url::parse(&self.base_url)
            .map_err(|e| Error::Config(format!("base URL `{}`: {e}", self.base_url)))?;
        if !base.path().ends_with('/') {
            // So that joining `events` keeps a path prefix such as `/beacon`.
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| Error::Config(format!("base URL `{}`: {e}", self.base_url)))
        };
        let s = self.settings;
        if s.batch_size == 0 || s.batch_size > beacon_protocol::limits::MAX_BATCH_EVENTS {
            return Err(Error::Config(format!(
                "batch_size must be 1 to {}",
                beacon_protocol::limits::MAX_BATCH_EVENTS
            )));
        }
        if self.capacity == 0 || s.flush_interval.is_zero() {
            return Err(Error::Config(
                "queue_capacity and flush_interval must be greater than zero".to_owned(),
            ));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder().build()?,
        };
        let shared = Arc::new(Shared {
            buffer: Mutex::new(VecDeque::with_capacity(self.capacity.min(1024))),
            capacity: self.capacity,
            batch_ready: Notify::new(),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            settings: Settings {
                events_url: join("events")?,
                stats_url: join("stats")?,
                flush_interval: s.flush_interval,
                batch_size: s.batch_size,
                max_batch_bytes: s.max_batch_bytes.max(1024),
                request_timeout: s.request_timeout,
                max_retries: s.max_retries,
                backoff_base: s.backoff_base,
                backoff_max: s.backoff_max.max(s.backoff_base),
                max_retry_after: s.max_retry_after,
                gzip: s.gzip,
                shutdown_timeout: s.shutdown_timeout,
            },
            http,
        });
        let (commands, inbox) = mpsc::unbounded_channel();
        sender::spawn(Arc::clone(&shared), inbox)?;
        Ok(Client {
            handle: Arc::new(Handle {
                shared,
                commands,
                site_id,
                user_id: self.user_id,
            }),
        })
    }
}
