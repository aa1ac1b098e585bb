//! The HTTP floor: an axum server whose `POST /event` does nothing but answer like Beacon.
//! `scripts/bench` loads it and Beacon in the same run and reports Beacon's rate as a
//! share of this one.
//!
//! ```text
//! cargo run --release --example floor -- [PORT]
//! ```

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "1001".to_owned());
    let app = axum::Router::new().route(
        "/event",
        post(|| async {
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"status": "queued"})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("floor listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
