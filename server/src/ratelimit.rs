//! Rate limits with `tower_governor`: a token bucket per client, answering `429` with
//! `Retry-After` in the API's JSON error shape.
//! - Ingest, per client address (`RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`). Which
//!   address counts is `client_ip`'s answer, the same as for cookieless ids.
//! - Reads and the admin API, per key (`READ_RATE_LIMIT_PER_SECOND`,
//!   `READ_RATE_LIMIT_BURST`): the key's id, or the client address without a key. An
//!   unknown key gets a bucket too, but is refused `401` after it.
//!
//! Buckets of addresses that have gone quiet are dropped every minute, so the limiter's
//! memory follows the number of recent clients, not of all clients ever seen.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::response::IntoResponse;
use beacon_config::RateLimit;
use governor::middleware::NoOpMiddleware;
use tower_governor::GovernorError;
use tower_governor::GovernorLayer;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::access::bearer;
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::serve::peer;

/// How often quiet addresses' buckets are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Keys requests by client address.
#[derive(Debug, Clone, Copy)]
pub struct ClientKey {
    trust_proxy: bool,
}

impl KeyExtractor for ClientKey {
    type Key = IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
        // A request without a peer comes from inside (tests calling the router): one
        // bucket for all of them.
        Ok(client_ip(
            request.headers(),
            peer(request.extensions()),
            self.trust_proxy,
        )
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

/// Keys reads by the key's id (the part before its secret), else by client address.
#[derive(Debug, Clone, Copy)]
pub struct ReaderKey {
    trust_proxy: bool,
}

impl KeyExtractor for ReaderKey {
    type Key = String;

    fn extract<T>(&self, request: &Request<T>) -> Result<String, GovernorError> {
        if let Some(token) = bearer(request.headers()) {
            // A key's id, not its secret: buckets never hold secrets.
            let id = token
                .strip_prefix("bk_")
                .and_then(|rest| rest.split('_').next())
                .unwrap_or("token");
            return Ok(format!("key:{id}"));
        }
        let ip = ClientKey {
            trust_proxy: self.trust_proxy,
        }
        .extract(request)?;
        Ok(format!("ip:{ip}"))
    }
}

/// The limiter for ingest routes.
pub type Layer = GovernorLayer<ClientKey, NoOpMiddleware, Body>;
/// The limiter for reads.
pub type ReadLayer = GovernorLayer<ReaderKey, NoOpMiddleware, Body>;

/// A layer that limits each client address to `limit`.
pub fn layer(limit: RateLimit, trust_proxy: bool) -> Layer {
    governed(limit, ClientKey { trust_proxy }, true)
}

/// A layer that limits each key (each address without one) to `limit`.
pub fn read_layer(limit: RateLimit, trust_proxy: bool) -> ReadLayer {
    governed(limit, ReaderKey { trust_proxy }, false)
}

/// A limiter keyed by `key`; `ingest` says whether what it refuses counts as ingest
/// refused (`beacon_ingest_events_total`).
fn governed<K>(limit: RateLimit, key: K, ingest: bool) -> GovernorLayer<K, NoOpMiddleware, Body>
where
    K: KeyExtractor + Send + Sync + 'static,
    K::Key: Send + Sync + 'static,
{
    let config: Arc<GovernorConfig<K, NoOpMiddleware>> = Arc::new(
        GovernorConfigBuilder::default()
            .period(Duration::from_secs(1) / limit.per_second.max(1))
            .burst_size(limit.burst.max(1))
            .key_extractor(key)
            .finish()
            // Both are at least one, the only way finish() fails.
            .unwrap_or_else(|| unreachable!("a period and burst above zero")),
    );
    tokio::spawn(forget_quiet(Arc::downgrade(&config)));
    GovernorLayer::new(config).error_handler(move |error| match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            if ingest {
                beacon_telemetry::ingest(beacon_telemetry::Ingest::RateLimited, 1);
            }
            ApiError::RateLimited {
                retry_after_secs: wait_time.max(1),
            }
            .into_response()
        }
        _ => ApiError::Internal("the rate limiter failed".to_owned()).into_response(),
    })
}

async fn forget_quiet<K>(config: Weak<GovernorConfig<K, NoOpMiddleware>>)
where
    K: KeyExtractor,
{
    loop {
        tokio::time::sleep(FORGET_EVERY).await;
        let Some(config) = config.upgrade() else {
            return; // the server is gone
        };
        config.limiter().retain_recent();
        config.limiter().shrink_to_fit();
    }
}
