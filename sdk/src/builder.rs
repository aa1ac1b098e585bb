//! Configuring a [`Client`]: the builder and the one settings type it fills in.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::client::{Client, Handle, Shared};
use crate::metrics::Counters;
use crate::{Error, sender};

/// How the client buffers and sends. The builder fills it in; the sender reads it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub capacity: usize,
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
    /// Sent as the bearer of reads (`stats`, `query`).
    pub read_key: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
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
            read_key: None,
        }
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
    http: Option<reqwest::Client>,
    root_certificates: Vec<Vec<u8>>,
    settings: Settings,
}

impl ClientBuilder {
    pub(crate) fn new(base_url: String) -> Self {
        Self {
            base_url,
            site_id: None,
            user_id: None,
            http: None,
            root_certificates: Vec::new(),
            settings: Settings::default(),
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
        self.settings.capacity = events;
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

    /// The key that reads send (`Authorization: Bearer`): a read key of the site, or
    /// the admin token, for a server with `ADMIN_TOKEN` set. Tracking needs none.
    pub fn read_key(mut self, key: impl Into<String>) -> Self {
        self.settings.read_key = Some(key.into());
        self
    }

    /// Also trusts this certificate authority (DER-encoded) for `https://` servers, for
    /// a Beacon behind a private CA. Publicly trusted certificates need nothing: the
    /// client trusts the Mozilla roots (rustls with webpki-roots, no OpenSSL).
    pub fn root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(der.into());
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
        let mut settings = self.settings;
        if settings.batch_size == 0
            || settings.batch_size > beacon_protocol::limits::MAX_BATCH_EVENTS
        {
            return Err(Error::Config(format!(
                "batch_size must be 1 to {}",
                beacon_protocol::limits::MAX_BATCH_EVENTS
            )));
        }
        if settings.capacity == 0 || settings.flush_interval.is_zero() {
            return Err(Error::Config(
                "queue_capacity and flush_interval must be greater than zero".to_owned(),
            ));
        }
        settings.max_batch_bytes = settings.max_batch_bytes.max(1024);
        settings.backoff_max = settings.backoff_max.max(settings.backoff_base);
        let http = match self.http {
            Some(http) => http,
            None => {
                let mut builder = reqwest::Client::builder();
                for der in &self.root_certificates {
                    let certificate = reqwest::Certificate::from_der(der)
                        .map_err(|e| Error::Config(format!("root certificate: {e}")))?;
                    builder = builder.add_root_certificate(certificate);
                }
                builder.build()?
            }
        };
        let shared = Arc::new(Shared {
            buffer: Mutex::new(VecDeque::with_capacity(settings.capacity.min(1024))),
            batch_ready: Notify::new(),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            deadline: Mutex::new(None),
            wake: Notify::new(),
            events_url: join("events")?,
            stats_url: join("stats")?,
            query_url: join("api/v2/query")?,
            settings,
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
