//! `GET /metrics`: the Prometheus text format, behind a bearer token when one is set.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use beacon_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// The content type of Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Exporter {
    handle: PrometheusHandle,
    store: Store,
    token: Option<Arc<str>>,
    timeout: Duration,
}

/// `GET /metrics` for `store`'s process, asking for `token` when given; the queue's
/// figures are read within `timeout` at each scrape.
pub fn router<S>(store: Store, token: Option<String>, timeout: Duration) -> Router<S> {
    let exporter = Exporter {
        handle: crate::install(),
        store,
        token: token.map(Arc::from),
        timeout,
    };
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(exporter)
}

/// Listens on `addr` (`METRICS_PORT`) and serves `router` there in the background
/// until `shutdown` resolves. Fails only if the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    Ok(())
}

async fn metrics(State(exporter): State<Exporter>, headers: HeaderMap) -> Response {
    if let Some(token) = &exporter.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let body = serde_json::json!({
                "error": "unauthorized",
                "message": "/metrics needs Authorization: Bearer <METRICS_TOKEN>",
            });
            let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    refresh_queue(&exporter).await;
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))],
        exporter.handle.render(),
    )
        .into_response()
}

/// Reads the queue's figures into their gauges. While the store cannot answer, the
/// last figures stay and the failure is counted.
async fn refresh_queue(exporter: &Exporter) {
    let store = &exporter.store;
    let read = async {
        Ok::<_, beacon_store::StoreError>((
            store.queue_status().await?,
            store.dead_letters().await?,
        ))
    };
    match tokio::time::timeout(exporter.timeout, read).await {
        Ok(Ok((queue, dead))) => {
            let age = queue.oldest_age(chrono::Utc::now());
            crate::record::queue(queue.depth, age, dead);
        }
        Ok(Err(e)) => crate::store_error(e.kind()),
        Err(_) => crate::store_error("timeout"),
    }
}
