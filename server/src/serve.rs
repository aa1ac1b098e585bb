//! Serving connections with limits that hold on the open internet.
//!
//! `axum::serve` runs hyper without a timer, so a client that opens a connection and
//! sends half a request holds it forever, and graceful shutdown waits for it forever.
//! This is the same loop with what it lacks:
//! - a header-read timeout: a connection that has not sent a request's headers within
//!   `HEADER_TIMEOUT_MS` is closed, whether it is new or idle between requests;
//! - a cap on connections served at once (`MAX_CONNECTIONS`): further ones wait in the
//!   kernel's backlog until one closes, so a flood cannot exhaust memory or descriptors;
//! - a shutdown deadline (`SHUTDOWN_TIMEOUT_MS`): once the shutdown signal comes, no new
//!   connection is accepted, idle ones are closed, requests in flight get that long to
//!   finish, and whatever is left is abandoned. Nothing acknowledged is lost by it: an
//!   answer is sent only once its events are durable.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use beacon_config::Limits;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves, then drains within the
/// shutdown deadline.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections, so that the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; nothing to serve if it were
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: Request<Incoming>| {
                // What `into_make_service_with_connect_info` would insert.
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let in_flight = connections.len();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(
                connections = connections.len(),
                of = in_flight,
                "shutdown deadline reached: abandoning the connections still open"
            );
        }
    }
    connections.shutdown().await;
}

/// The peer address of a request, as `serve` recorded it (absent in tests that call the
/// router directly).
pub(crate) fn peer(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}
