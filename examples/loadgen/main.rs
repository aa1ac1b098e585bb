//! Load generator for Beacon: throughput and latency percentiles (HDR histogram).
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:1000 \
//!     --mode single --connections 64 --duration 10 [--rate 12000]
//! cargo run --release --example loadgen -- --mode batch --batch 100 --connections 8
//! cargo run --release --example loadgen -- --mode freshness --probes 50
//! cargo run --release --example loadgen -- --mode seed --events 10000000 --days 30
//! cargo run --release --example loadgen -- --mode stats --requests 2000
//! cargo run --release --example loadgen -- --mode query --requests 1000 --raw-requests 5
//! ```
//! `--rate` caps requests per second across all connections; without it each connection
//! sends as fast as answers come back. A progress line is printed every second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

mod reads;
mod seed;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// `POST /event`, one event per request.
    Single,
    /// `POST /events`, `--batch` events per request.
    Batch,
    /// Freshness: post one event to a new site and time until `/stats` counts it,
    /// `--probes` times, one after another.
    Freshness,
    /// Seeding: `--events` events spread evenly over the last `--days` days, oldest
    /// first, in batches of 1,000 on `--connections`; then waits for the worker.
    Seed,
    /// `/stats` latency: `--requests` sequential queries each for all time and for the
    /// last 7 days.
    Stats,
    /// Query API latency: the dashboard's queries `--requests` times each, filtered ones
    /// (a raw scan) `--raw-requests` times each.
    Query,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for Beacon")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:1000")]
    url: String,
    /// What to send.
    #[arg(long, value_enum, default_value = "single")]
    mode: Mode,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Requests per second across all connections (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Events per request in batch mode.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Site id to send as.
    #[arg(long, default_value = "loadgen")]
    site: String,
    /// Distinct paths to spread events over.
    #[arg(long, default_value_t = 50)]
    paths: usize,
    /// Print one machine-readable line at the end: `RESULT key=value ...`.
    #[arg(long)]
    result_line: bool,
    /// Probes in freshness mode.
    #[arg(long, default_value_t = 50)]
    probes: usize,
    /// Events to write in seed mode.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Days the seeded events span, ending now.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Distinct users in seed mode.
    #[arg(long, default_value_t = 200_000)]
    users: u64,
    /// Seed mode: give every event a path of its own, `/d/<N + i>`, instead of one of
    /// `--paths`: the long tail of a big site, or a flood of junk paths.
    #[arg(long)]
    distinct_from: Option<u64>,
    /// Seed mode: put every event in one hour (yesterday's first, UTC) instead of
    /// spreading them over `--days`.
    #[arg(long)]
    one_hour: bool,
    /// Seed mode: pause sending while the server's queue holds more than this many
    /// events, so a slow worker is not buried (default: never pause).
    #[arg(long)]
    max_queue: Option<u64>,
    /// Queries per kind in stats mode.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Queries per filtered kind in query mode: each reads every raw event in its range.
    #[arg(long, default_value_t = 5)]
    raw_requests: usize,
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    events: AtomicU64,
    errors: AtomicU64,
}

/// Latencies in microseconds, from 1 µs to an hour (a raw query can take minutes), 3
/// significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A latency quantile in milliseconds.
fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1000.0
}

fn body(args: &Args, n: u64) -> Vec<u8> {
    let event = |i: u64| {
        serde_json::json!({
            "site_id": args.site,
            "event_type": if i.is_multiple_of(5) { "click" } else { "page_view" },
            "path": format!("/page/{}", i % args.paths as u64),
            "user_id": format!("user{}", i % 10_000),
            "event_id": uuid::Uuid::now_v7(),
        })
    };
    match args.mode {
        Mode::Single | Mode::Freshness | Mode::Seed | Mode::Stats | Mode::Query => {
            serde_json::to_vec(&event(n))
        }
        Mode::Batch => serde_json::to_vec(
            &(0..args.batch as u64)
                .map(|i| event(n + i))
                .collect::<Vec<_>>(),
        ),
    }
    .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(600)) // a raw scan of 10 million events
        .build()
        .expect("HTTP client");
    let url = match args.mode {
        Mode::Freshness => return reads::freshness(&args, &http).await,
        Mode::Seed => return seed::seed(&args, &http).await,
        Mode::Stats => return reads::stats_latency(&args, &http).await,
        Mode::Query => return reads::query_latency(&args, &http).await,
        Mode::Single => format!("{}/event", args.url.trim_end_matches('/')),
        Mode::Batch => format!("{}/events", args.url.trim_end_matches('/')),
    };
    let events_per_request = match args.mode {
        Mode::Batch => args.batch as u64,
        Mode::Single | Mode::Freshness | Mode::Seed | Mode::Stats | Mode::Query => 1,
    };
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    // Each connection paces itself to its share of the rate.
    let pause = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r.max(1) as f64));
    let workers: Vec<_> = (0..args.connections)
        .map(|c| {
            let (args, http, url, totals) = (
                Arc::clone(&args),
                http.clone(),
                url.clone(),
                Arc::clone(&totals),
            );
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                let mut n = c as u64 * 1_000_000_000;
                let mut next = Instant::now();
                while Instant::now() < end {
                    if let Some(p) = pause {
                        next += p;
                        tokio::time::sleep_until(next.into()).await;
                    }
                    let payload = body(&args, n);
                    n += events_per_request;
                    let sent = Instant::now();
                    let ok = match http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(payload)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success(),
                        Err(_) => false,
                    };
                    // With a rate, latency counts from the scheduled time (no coordinated omission).
                    let from = if pause.is_some() {
                        next.min(sent)
                    } else {
                        sent
                    };
                    let _ = histogram.record(from.elapsed().as_micros().max(1) as u64);
                    totals.requests.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        totals
                            .events
                            .fetch_add(events_per_request, Ordering::Relaxed);
                    } else {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                histogram
            })
        })
        .collect();
    let progress = {
        let totals = Arc::clone(&totals);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = totals.requests.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>4.0}s  {:>8} req/s  {:>10} requests  {} errors",
                    started.elapsed().as_secs_f64(),
                    now - last,
                    now,
                    totals.errors.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };
    let mut histogram = new_histogram();
    for w in workers {
        if let Ok(h) = w.await {
            let _ = histogram.add(h);
        }
    }
    progress.abort();
    let secs = started.elapsed().as_secs_f64();
    let requests = totals.requests.load(Ordering::Relaxed);
    let events = totals.events.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let ms = |q: f64| quantile_ms(&histogram, q);
    println!(
        "{:?} x{} for {secs:.1}s: {:.0} req/s, {:.0} events/s, {errors} errors",
        args.mode,
        args.connections,
        requests as f64 / secs,
        events as f64 / secs
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        quantile_ms(&histogram, 1.0)
    );
    if args.result_line {
        println!(
            "RESULT rps={:.0} eps={:.0} errors={errors} p50={:.2} p99={:.2}",
            requests as f64 / secs,
            events as f64 / secs,
            ms(0.5),
            ms(0.99)
        );
    }
}
