//! Beacon's API server: takes events over HTTP, queues them durably, and answers stats.
//!
//! - [`run`] starts everything on a bound listener until a shutdown future resolves: the
//!   binary and the tests call it alike.
//! - [`app`] builds the axum router: `POST /event`, `POST /events`, `GET /stats`,
//!   `POST /api/v2/query`, the admin API, `GET /health` (and `/health/live`,
//!   `/health/ready`: `health`).
//! - `routes` holds the handlers; [`error`] maps every failure to a status and a JSON
//!   body. The settings come from `beacon-config` ([`ServerConfig`]).
//! - `serve` accepts connections with a header timeout, a connection cap and a shutdown
//!   deadline; `pressure` refuses ingest above the queue's high-water mark;
//!   `ratelimit` limits ingest per client address, which `client_ip` determines.
//! - `sdk` serves the browser SDK under `/sdk/`; `cookieless` derives anonymous daily
//!   user ids for browsers that keep none.
//! - `enrich` turns user agents, referrers and addresses into an event's context at
//!   ingest (with `referrers`), and leaves bots out; `query` is the query API.
//! - `access`, `admin`, `sites` and `export`: keys, the admin API, the sites registry,
//!   and exports.
//! - `health` answers `/health`, `/health/live` and `/health/ready`; `openapi` describes
//!   every route (`/openapi.json`) and `docs` renders the description (`/docs`);
//!   `/metrics` comes from `beacon-telemetry`; `dashboard` serves the dashboard's files
//!   and the sites its picker lists.
//!
//! The server only queues. Moving events into `events` is the worker's job: a separate
//! `beacon-worker` process on MongoDB, or a task inside this process on the embedded store.

mod access;
mod admin;
mod client_ip;
mod cookieless;
mod dashboard;
mod docs;
mod enrich;
pub mod error;
mod export;
mod health;
mod openapi;
mod pressure;
mod query;
mod ratelimit;
mod referrers;
mod routes;
mod sdk;
mod serve;
mod sites;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{Method, header};
use beacon_config::Limits;
use beacon_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use beacon_config::ServerConfig;

/// What the handlers share. axum clones it for every request, so it is one `Arc`: one
/// increment rather than a copy of every handle inside.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The queue, events and stats.
    pub store: Store,
    /// Timeouts and limits.
    pub limits: Limits,
    /// The queue's depth against its high-water mark.
    pub pressure: Arc<pressure::Pressure>,
    /// Who may read what.
    pub auth: access::Auth,
    /// Which events ingest lets in.
    pub sites: Arc<sites::Sites>,
    /// Browser, device, source and country of each event; bots left out.
    pub enricher: enrich::Enricher,
    /// `TRUST_PROXY`.
    pub trust_proxy: bool,
    /// Anonymous ids for cookieless batches.
    pub anonymizer: cookieless::Anonymizer,
    /// Where `/metrics` is served, and its token.
    pub observe: beacon_config::Observe,
}

impl AppState {
    /// The state for `store`; fails if `GEOIP_DB` cannot be read.
    pub fn new(store: Store, config: &ServerConfig) -> Result<Self, ServerError> {
        let enricher = enrich::Enricher::new(config.geoip_db.as_deref(), config.bot_filter)?;
        Ok(Self(Arc::new(Shared {
            anonymizer: cookieless::Anonymizer::new(store.clone(), config.trust_proxy),
            pressure: pressure::Pressure::start(store.clone(), config.limits.queue_max_events),
            auth: access::Auth::new(config.admin_token.as_deref(), store.clone()),
            sites: sites::Sites::start(store.clone(), config.strict_sites),
            limits: config.limits.clone(),
            enricher,
            trust_proxy: config.trust_proxy,
            observe: config.worker.observe.clone(),
            store,
        })))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The listener failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// `GEOIP_DB` cannot be read.
    #[error(transparent)]
    GeoIp(#[from] enrich::GeoIpError),
}

/// The documented routes, grouped by the layers they need: ingest, reads and the admin
/// API, exports, and operations. [`app`] serves these groups and
/// [`openapi::description`] describes them, so the two cannot drift apart.
struct Routes {
    ingest: OpenApiRouter<AppState>,
    reads: OpenApiRouter<AppState>,
    exports: OpenApiRouter<AppState>,
    ops: OpenApiRouter<AppState>,
}

fn route_groups() -> Routes {
    Routes {
        ingest: OpenApiRouter::new()
            .routes(routes!(routes::post_event))
            .routes(routes!(routes::post_events)),
        reads: OpenApiRouter::new()
            .routes(routes!(routes::get_stats))
            .routes(routes!(query::post_query))
            .routes(routes!(dashboard::sites))
            .routes(routes!(admin::create_site, admin::list_sites))
            .routes(routes!(
                admin::get_site,
                admin::update_site,
                admin::delete_site
            ))
            .routes(routes!(admin::create_key, admin::list_keys))
            .routes(routes!(admin::revoke_key))
            .routes(routes!(admin::erase_user)),
        exports: OpenApiRouter::new().routes(routes!(export::export)),
        ops: OpenApiRouter::new()
            .routes(routes!(health::health))
            .routes(routes!(health::live))
            .routes(routes!(health::ready))
            .routes(routes!(openapi::openapi_json))
            .routes(routes!(openapi::docs))
            .routes(routes!(dashboard::root))
            .routes(routes!(dashboard::page))
            .routes(routes!(dashboard::style))
            .routes(routes!(dashboard::script)),
    }
}

/// Every documented route, without layers: what the description is made from.
pub(crate) fn routes_documented() -> OpenApiRouter<AppState> {
    let groups = route_groups();
    groups
        .ingest
        .merge(groups.reads)
        .merge(groups.exports)
        .merge(groups.ops)
}

/// The router. Ingest routes and the browser SDK's files (from `sdk_dir`) allow any
/// origin (browsers send from the sites they track); reads and the admin API are for
/// operators and do not. Ingest is rate-limited per client address and reads per key
/// when the layers are given.
pub fn app(state: AppState, sdk_dir: &Path, limits: RateLimits) -> Router {
    // No `Vary`: every answer allows any origin, the same methods and the same headers,
    // whatever the request asked, so there is nothing for a cache to tell apart, and
    // tower-http would build the header anew for every event.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::CONTENT_ENCODING])
        .max_age(std::time::Duration::from_secs(24 * 3600))
        .vary([]);
    let Routes {
        ingest,
        reads,
        exports,
        ops,
    } = route_groups();
    // A wrong method gets the API's JSON error; set before the layers, so that CORS
    // still answers preflights.
    let routed = |group: OpenApiRouter<AppState>| {
        Router::from(group).method_not_allowed_fallback(routes::method_not_allowed)
    };
    let (mut ingest, mut reads, mut exports, ops) =
        (routed(ingest), routed(reads), routed(exports), routed(ops));
    if let Some(limit) = limits.ingest {
        ingest = ingest.layer(limit);
    }
    // An export streams for as long as it takes: outside the request timeout.
    if let Some(limit) = limits.reads {
        reads = reads.layer(limit.clone());
        exports = exports.layer(limit);
    }
    let request_timeout = state.limits.request_timeout;
    // On the API's port unless METRICS_PORT gives it one of its own (see `run`).
    let metrics = match state.observe.metrics_port {
        None => metrics_router(&state),
        Some(_) => Router::new(),
    };
    // Ingest's answers go uncompressed: an SDK reads only their statuses, and gzipping a
    // batch's answer cost more CPU than queueing its events (BENCHMARKS.md).
    let compression = CompressionLayer::new();
    let compressed = Router::new()
        .merge(reads)
        .merge(sdk::routes(sdk_dir))
        .merge(metrics)
        .merge(ops)
        .layer(compression.clone());
    let timed = Router::new()
        .merge(ingest.layer(cors))
        .merge(compressed)
        .fallback(routes::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(error::middleware_error))
                .timeout(request_timeout),
        );
    // The metrics' layer needs the route the router matched, so it is on every route;
    // it counts a panic as the 500 that the panic layer outside answers.
    let routed = timed
        .merge(exports.layer(compression))
        .with_state(state)
        .layer(beacon_telemetry::TrackHttpLayer);
    // The rest wrap the router once: a layer on a router is a layer on each of its
    // routes, cloned with the route's whole stack on every request (BENCHMARKS.md).
    let outer = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(error::panic_response))
        // A 5xx is no error line of its own: what failed inside is logged where it
        // failed, and a full queue's 503s, one per refused request under a flood, are
        // counted in the metrics instead.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        // Body limits apply after decompression, so a gzip bomb stops at the limit.
        .layer(RequestDecompressionLayer::new().pass_through_unaccepted(true))
        // `from_fn` takes axum's body type.
        .map_request(|request: axum::http::Request<_>| request.map(axum::body::Body::new))
        .layer(axum::middleware::from_fn(error::refuse_unknown_encoding))
        .service(routed);
    Router::new().fallback_service(outer)
}

/// `GET /metrics`, for this process.
fn metrics_router<S: Clone + Send + Sync + 'static>(state: &AppState) -> Router<S> {
    beacon_telemetry::router(
        state.store.clone(),
        state.observe.metrics_token.clone(),
        state.limits.store_timeout,
    )
}

/// The rate limiters of [`app`]: on ingest per client address, on reads per key.
#[derive(Default)]
pub struct RateLimits {
    /// Ingest, per client address.
    pub ingest: Option<ratelimit::Layer>,
    /// Reads and the admin API, per key (per address without one).
    pub reads: Option<ratelimit::ReadLayer>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("ingest", &self.ingest.is_some())
            .field("reads", &self.reads.is_some())
            .finish()
    }
}

impl RateLimits {
    /// The limiters `config` asks for.
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            ingest: config
                .limits
                .rate_limit
                .map(|limit| ratelimit::layer(limit, config.trust_proxy)),
            reads: config
                .limits
                .read_rate_limit
                .map(|limit| ratelimit::read_layer(limit, config.trust_proxy)),
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests
/// (within `SHUTDOWN_TIMEOUT_MS`) and the worker's current batch.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = Store::open(config.worker.store.clone()).await?;
    tracing::info!(store = %store.describe(), worker_in_process = config.run_worker, "store opened");
    if !config.sdk_dir.join("beacon.js").is_file() {
        tracing::info!(sdk_dir = %config.sdk_dir.display(), "browser SDK not built: /sdk/ answers 404 until scripts/build-wasm runs");
    }
    if config.admin_token.is_none() {
        tracing::warn!(
            "ADMIN_TOKEN is not set: anyone who can reach this server can read every site's stats, and the admin API is off"
        );
    }
    let state = AppState::new(store.clone(), &config)?;
    let (stop, stopped) = watch::channel(false);
    if let Some(port) = state.observe.metrics_port {
        let mut stopped = stopped.clone();
        let until_stopped = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let addr = std::net::SocketAddr::new(config.host, port);
        beacon_telemetry::serve(addr, metrics_router(&state), until_stopped).await?;
    }
    let router = app(state, &config.sdk_dir, RateLimits::from_config(&config));
    let background = if config.run_worker {
        let worker_store = store.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let until_stopped = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            beacon_worker::run(config.worker, worker_store, until_stopped).await;
        })
    } else {
        let ready_store = store.clone();
        let poll = config.worker.poll_interval;
        tokio::spawn(async move {
            beacon_worker::wait_until_ready(&ready_store, poll).await;
            tracing::info!("store ready (indexes in place)");
        })
    };
    let addr = listener.local_addr()?;
    tracing::info!("Beacon listening on http://{addr}");
    serve::serve(listener, router, &config.limits, shutdown).await;
    let _ = stop.send(true);
    if config.run_worker {
        let _ = background.await;
    } else {
        background.abort();
    }
    Ok(())
}
