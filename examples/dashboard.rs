//! How long the dashboard takes to show everything, in headless Chromium: from the start
//! of navigation until every card, the chart and every table are filled (the page's own
//! `data-render-ms`). Each run is a new browser, so nothing is cached.
//!
//! ```text
//! cargo run --release --example dashboard -- --url 'http://127.0.0.1:1000/dashboard?site_id=big&period=30d'
//! ```
#![allow(clippy::unwrap_used)]

use beacon_testkit::browser::time_in_fresh_browsers;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The dashboard's URL, with the site and period.
    #[arg(long)]
    url: String,
    /// How many fresh browsers load it.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one machine-readable RESULT line at the end.
    #[arg(long)]
    result_line: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let times = time_in_fresh_browsers(
        &args.url,
        args.runs,
        "return document.body.dataset.renderMs || null",
        "first full render",
    )
    .await;
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!("median {median} ms, max {max} ms over {} runs", times.len());
    if args.result_line {
        println!("RESULT render_median_ms={median} render_max_ms={max}");
    }
}
