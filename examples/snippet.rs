//! How soon the snippet sends a page's first page view, in headless Chromium: from
//! `DOMContentLoaded` to the start of the `POST /events` that carries it (the browser's
//! own resource timing). Each run is a new browser, so nothing is cached: the snippet
//! and the wasm module are both fetched, and the module compiled.
//!
//! ```text
//! scripts/build-wasm && cargo run --release   # a server serving the SDK, on port 1000
//! cargo run --release --example snippet -- --beacon http://127.0.0.1:1000
//! ```
#![allow(clippy::unwrap_used)]

use axum::extract::State;
use axum::response::Html;
use beacon_testkit::browser::time_in_fresh_browsers;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The Beacon server that serves the SDK and takes the events.
    #[arg(long, default_value = "http://127.0.0.1:1000")]
    beacon: String,
    /// How many fresh browsers load the page.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one machine-readable RESULT line at the end.
    #[arg(long)]
    result_line: bool,
}

/// A plain page carrying the snippet, on its own origin as a site would be.
async fn page(State(beacon): State<String>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>snippet timing</title>\
         <script defer src=\"{beacon}/sdk/beacon.js\" data-site-id=\"snippet-timing\" \
         data-allow-localhost></script></head><body><p>Hello.</p></body></html>"
    ))
}

const MEASURE: &str = "
const nav = performance.getEntriesByType('navigation')[0];
const sent = performance.getEntriesByType('resource').find(e => e.name.endsWith('/events'));
return sent ? Math.round(sent.startTime - nav.domContentLoadedEventStart) : null;";

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}/", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(page)
        .with_state(args.beacon.trim_end_matches('/').to_owned());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let times = time_in_fresh_browsers(&site, args.runs, MEASURE, "first page view sent").await;
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "after DOMContentLoaded: median {median} ms, max {max} ms over {} runs",
        times.len()
    );
    if args.result_line {
        println!("RESULT snippet_first_view_median_ms={median} max_ms={max}");
    }
}
