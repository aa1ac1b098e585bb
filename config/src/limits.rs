//! How much the server takes from the open internet: timeouts, connections, the queue's
//! high-water mark and rate limits.

use std::time::Duration;

/// The server's limits. Every ingest route is public, so each has a default that holds
/// against slow, half-sent or floods of requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `HEADER_TIMEOUT_MS`: a connection that has not sent a request's headers within
    /// this time is closed.
    pub header_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS`: a request not answered within this time gets a `408`.
    pub request_timeout: Duration,
    /// `STORE_TIMEOUT_MS`: how long a request waits for its write to start, and how
    /// long a write may take, before the answer is `503` (and nothing is stored).
    pub store_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// `SHUTDOWN_TIMEOUT_MS`: how long shutdown waits for requests in flight before
    /// abandoning them.
    pub shutdown_timeout: Duration,
    /// `QUEUE_MAX_EVENTS`: above this many queued events, ingest answers `503`.
    pub queue_max_events: u64,
    /// `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST`: ingest requests per client
    /// address, or `None` when `RATE_LIMIT_PER_SECOND=0`.
    pub rate_limit: Option<RateLimit>,
    /// `READ_RATE_LIMIT_PER_SECOND` and `READ_RATE_LIMIT_BURST`: reads (stats, queries,
    /// the admin API) per key (per address in open mode), or `None` when 0.
    pub read_rate_limit: Option<RateLimit>,
}

/// A token bucket per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Limits {
    /// How long a request body may take to arrive: what the request timeout leaves
    /// after the longest wait for the store and the longest write, so that a write is
    /// never cut off by the request timeout (a `408` or `503` then always means "not
    /// stored").
    pub fn body_timeout(&self) -> Duration {
        self.request_timeout
            .saturating_sub(self.store_timeout.saturating_mul(2))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LimitArgs {
    /// Close a connection that has not sent a request's headers within this time, in
    /// milliseconds.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Answer 408 to a request not answered within this time, in milliseconds. Must be
    /// more than twice STORE_TIMEOUT_MS: the rest is how long a body may take to arrive.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Answer 503 (storing nothing) when an event's write cannot start, or finish, within
    /// this time, in milliseconds.
    #[arg(long, env = "STORE_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    store_timeout_ms: u64,
    /// Connections served at once; further ones wait to be accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    /// Above this many queued events, ingest answers 503 with Retry-After.
    #[arg(long, env = "QUEUE_MAX_EVENTS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    queue_max_events: u64,
    /// Ingest requests per second per client address (TRUST_PROXY decides which); 0
    /// turns rate limiting off.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 500)]
    rate_limit_per_second: u32,
    /// Ingest requests per client address allowed at once above that rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_burst: u32,
    /// Reads (stats, queries, the admin API) per second per key, or per client address
    /// without one; 0 turns it off.
    #[arg(long, env = "READ_RATE_LIMIT_PER_SECOND", default_value_t = 20)]
    read_rate_limit_per_second: u32,
    /// Reads per key allowed at once above that rate.
    #[arg(long, env = "READ_RATE_LIMIT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    read_rate_limit_burst: u32,
}

impl LimitArgs {
    pub(crate) fn resolve(&self) -> Result<Limits, clap::Error> {
        if self.request_timeout_ms <= self.store_timeout_ms.saturating_mul(2) {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value for '--request-timeout-ms <REQUEST_TIMEOUT_MS>': {} must be more than twice STORE_TIMEOUT_MS ({})\n",
                    self.request_timeout_ms, self.store_timeout_ms
                ),
            ));
        }
        Ok(Limits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            store_timeout: Duration::from_millis(self.store_timeout_ms),
            // At most a million, checked by the parser.
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            queue_max_events: self.queue_max_events,
            rate_limit: (self.rate_limit_per_second > 0).then_some(RateLimit {
                per_second: self.rate_limit_per_second,
                burst: self.rate_limit_burst,
            }),
            read_rate_limit: (self.read_rate_limit_per_second > 0).then_some(RateLimit {
                per_second: self.read_rate_limit_per_second,
                burst: self.read_rate_limit_burst,
            }),
        })
    }
}
