//! How long the dashboard takes to show everything, in headless Chromium: from the start
//! of navigation until every card, the chart and every table are filled (the page's own
//! `data-render-ms`). Each run is a new browser, so nothing is cached.
//!
//! ```text
//! cargo run --release --example dashboard -- --url 'http://127.0.0.1:1000/dashboard?site_id=big&period=30d'
//! ```
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use beacon_testkit::browser::{browser, chromedriver, start_chromedriver};
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
    let driver = chromedriver().unwrap_or_else(|why| panic!("{why}"));
    let (_driver, webdriver) = start_chromedriver(&driver).await;
    let mut times = Vec::new();
    for run in 1..=args.runs {
        let client = browser(&webdriver, 1280, 800).await;
        client.goto(&args.url).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let ms = loop {
            let value = client
                .execute("return document.body.dataset.renderMs || null", vec![])
                .await
                .unwrap();
            if let Some(ms) = value.as_str().and_then(|v| v.parse::<u64>().ok()) {
                break ms;
            }
            assert!(tokio::time::Instant::now() < deadline, "never rendered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!("run {run}: first full render in {ms} ms");
        times.push(ms);
        client.close().await.unwrap();
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!("median {median} ms, max {max} ms over {} runs", times.len());
    if args.result_line {
        println!("RESULT render_median_ms={median} render_max_ms={max}");
    }
}
