//! The layer behind `beacon_http_requests_total` and
//! `beacon_http_request_duration_seconds`.
//!
//! A tower layer rather than `axum::middleware::from_fn`: it sits on every route, where
//! `from_fn` clones the route's whole stack of boxed services and boxes it again on
//! every request, which cost more than the rest of ingest's layers (BENCHMARKS.md).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Times and counts each request by the route the router matched (`/api/sites/{site_id}`,
/// not the site asked for) and its status. Requests no route matched count under
/// `unmatched`, so that scanning for paths adds no series. Added with `Router::layer`,
/// where the router has set the matched path.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackHttpLayer;

impl<S> Layer<S> for TrackHttpLayer {
    type Service = TrackHttp<S>;

    fn layer(&self, inner: S) -> TrackHttp<S> {
        TrackHttp { inner }
    }
}

/// The service [`TrackHttpLayer`] makes.
#[derive(Debug, Clone)]
pub struct TrackHttp<S> {
    inner: S,
}

impl<S: Service<Request, Response = Response>> Service<Request> for TrackHttp<S> {
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        // A clone of the matched path is a reference count, not a copy.
        let route = request.extensions().get::<MatchedPath>().cloned();
        Tracked {
            inner: self.inner.call(request),
            route,
            started,
        }
    }
}

pin_project! {
    /// A request's answer, counted when it is ready.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let inner = this.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(answer)) => {
                if let Ok(response) = &answer {
                    let status = response.status().as_u16();
                    crate::http_request(route, status, this.started.elapsed());
                }
                Poll::Ready(answer)
            }
            // The panic layer outside answers it with a 500: counted as that here.
            Err(panic) => {
                crate::http_request(route, 500, this.started.elapsed());
                std::panic::resume_unwind(panic)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::{ServiceBuilder, ServiceExt};
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    fn count(rendered: &str, series: &str) -> f64 {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn boom() -> &'static str {
        panic!("a handler's bug")
    }

    #[tokio::test]
    async fn answers_and_panics_are_counted_by_route_and_status() {
        let handle = crate::install();
        let routes = Router::new()
            .route("/fine/{id}", get(|| async { "fine" }))
            .route("/boom", get(boom))
            .layer(TrackHttpLayer);
        let app = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service(routes);
        for (path, status) in [
            ("/fine/1", 200),
            ("/fine/2", 200),
            ("/boom", 500),
            ("/x", 404),
        ] {
            let request = Request::builder().uri(path).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
        }
        let rendered = handle.render();
        let series = |route: &str, status: u16| {
            let labels = format!("{{route=\"{route}\",status=\"{status}\"}}");
            count(&rendered, &format!("beacon_http_requests_total{labels}"))
        };
        assert_eq!(series("/fine/{id}", 200), 2.0, "{rendered}");
        assert_eq!(series("/boom", 500), 1.0, "{rendered}");
        assert_eq!(series("unmatched", 404), 1.0, "{rendered}");
    }
}
