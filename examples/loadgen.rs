//! Load generator for Beacon: throughput and latency percentiles (HDR histogram).
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:1000 \
//!     --mode single --connections 64 --duration 10 [--rate 12000]
//! cargo run --release --example loadgen -- --mode batch --batch 100 --connections 8
//! cargo run --release --example loadgen -- --mode freshness --probes 50
//! cargo run --release --example loadgen -- --mode seed --events 10000000 --days 30
//! cargo run --release --example loadgen -- --mode stats --requests 2000
//! ```
//! `--rate` caps requests per second across all connections; without it each connection
//! sends as fast as answers come back. A progress line is printed every second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

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
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    events: AtomicU64,
    errors: AtomicU64,
}

/// Latencies in microseconds, from 1 µs to 60 s, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
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
        Mode::Single | Mode::Freshness | Mode::Seed | Mode::Stats => serde_json::to_vec(&event(n)),
        Mode::Batch => serde_json::to_vec(
            &(0..args.batch as u64)
                .map(|i| event(n + i))
                .collect::<Vec<_>>(),
        ),
    }
    .unwrap_or_default()
}

/// Time from an accepted event to `/stats` counting it, in microseconds.
async fn freshness(args: &Args, http: &reqwest::Client) {
    let base = args.url.trim_end_matches('/');
    let mut histogram = new_histogram();
    let mut timeouts = 0;
    for probe in 0..args.probes {
        let site = format!("fresh-{}", uuid::Uuid::now_v7().simple());
        let event = serde_json::json!({"site_id": site, "event_type": "page_view", "path": "/"});
        let accepted = http.post(format!("{base}/event")).json(&event).send().await;
        if !accepted.is_ok_and(|r| r.status().is_success()) {
            timeouts += 1;
            continue;
        }
        let start = Instant::now();
        let seen = loop {
            let stats = http
                .get(format!("{base}/stats?site_id={site}"))
                .send()
                .await
                .ok()
                .map(|r| r.json::<serde_json::Value>());
            if let Some(body) = stats
                && body.await.ok().and_then(|b| b["total_events"].as_u64()) == Some(1)
            {
                break true;
            }
            if start.elapsed() > Duration::from_secs(10) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if seen {
            let _ = histogram.record(start.elapsed().as_micros().max(1) as u64);
        } else {
            timeouts += 1;
        }
        eprintln!(
            "  probe {probe}: {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ms = |q: f64| quantile_ms(&histogram, q);
    println!(
        "freshness over {} probes: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms, {timeouts} not seen within 10 s",
        args.probes,
        ms(0.5),
        ms(0.99),
        quantile_ms(&histogram, 1.0)
    );
    if args.result_line {
        println!(
            "RESULT p50={:.1} p99={:.1} errors={timeouts}",
            ms(0.5),
            ms(0.99)
        );
    }
}

/// Seed mode: history, oldest first, as fast as the server takes it.
async fn seed(args: &Args, http: &reqwest::Client) {
    const BATCH: u64 = 1000;
    let total_events = args.events;
    let base = args.url.trim_end_matches('/').to_owned();
    const HOUR_MS: i64 = 3_600_000;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (end_ms, span_ms) = if args.one_hour {
        let hour = now_ms - now_ms.rem_euclid(24 * HOUR_MS) - 24 * HOUR_MS;
        (hour + HOUR_MS - 1, HOUR_MS - 1)
    } else {
        (now_ms, (args.days * 24 * 3600 * 1000) as i64)
    };
    let distinct_from = args.distinct_from;
    let next = Arc::new(AtomicU64::new(0));
    let queued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let max_queue = args.max_queue.unwrap_or(u64::MAX);
    let senders: Vec<_> = (0..args.connections)
        .map(|_| {
            let (next, http, base) = (Arc::clone(&next), http.clone(), base.clone());
            let queued = Arc::clone(&queued);
            let (total, users, paths, site) =
                (args.events, args.users, args.paths as u64, args.site.clone());
            tokio::spawn(async move {
                loop {
                    while queued.load(Ordering::Relaxed) > max_queue {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= total {
                        return;
                    }
                    let batch: Vec<_> = (first..(first + BATCH).min(total))
                        .map(|i| {
                            let at = end_ms - span_ms + (i as i128 * span_ms as i128 / total as i128) as i64;
                            let path = match distinct_from {
                                Some(from) => format!("/d/{}", from + i),
                                None => format!("/page/{}", (i * 7919) % paths),
                            };
                            serde_json::json!({
                                "site_id": site,
                                "event_type": if i.is_multiple_of(5) { "click" } else { "page_view" },
                                "path": path,
                                "user_id": format!("user{}", (i * 104_729) % users),
                                "timestamp": at,
                                "event_id": uuid::Uuid::now_v7(),
                            })
                        })
                        .collect();
                    loop {
                        let sent = http.post(format!("{base}/events")).json(&batch).send().await;
                        if sent.is_ok_and(|r| r.status().is_success()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    let progress = {
        let (http, base, queued) = (http.clone(), base.clone(), Arc::clone(&queued));
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Some(depth) = queue_depth(&http, &base).await {
                    queued.store(depth, Ordering::Relaxed);
                }
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    eprintln!(
                        "  {:>5.0}s  {} events sent, {} queued",
                        started.elapsed().as_secs_f64(),
                        next.load(Ordering::Relaxed).min(total_events),
                        queued.load(Ordering::Relaxed)
                    );
                }
            }
        })
    };
    for s in senders {
        let _ = s.await;
    }
    progress.abort();
    let sent_secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} events in {sent_secs:.0} s ({:.0} events/s accepted)",
        args.events,
        args.events as f64 / sent_secs
    );
    // Polled often, so that the end-to-end rate is not rounded to the poll.
    let mut polls = 0u64;
    loop {
        let depth = queue_depth(http, &base).await;
        if depth == Some(0) {
            break;
        }
        if polls.is_multiple_of(50) {
            eprintln!(
                "  {:>5.0}s  queue depth {depth:?}",
                started.elapsed().as_secs_f64()
            );
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "all processed after {secs:.0} s ({:.0} events/s end to end)",
        args.events as f64 / secs
    );
    if args.result_line {
        println!(
            "RESULT seeded={} accepted_eps={:.0} processed_eps={:.0}",
            args.events,
            args.events as f64 / sent_secs,
            args.events as f64 / secs
        );
    }
}

async fn queue_depth(http: &reqwest::Client, base: &str) -> Option<u64> {
    let health = http.get(format!("{base}/health")).send().await.ok()?;
    health.json::<serde_json::Value>().await.ok()?["queue_depth"].as_u64()
}

/// Stats mode: one client, queries back to back.
async fn stats_latency(args: &Args, http: &reqwest::Client) {
    let base = args.url.trim_end_matches('/');
    let week_ago = (chrono::Utc::now() - chrono::Duration::days(7)).format("%Y-%m-%d");
    let kinds = [
        ("all time", format!("{base}/stats?site_id={}", args.site)),
        (
            "last 7 days",
            format!("{base}/stats?site_id={}&from={week_ago}", args.site),
        ),
    ];
    let mut line = String::from("RESULT");
    for (i, (name, url)) in kinds.iter().enumerate() {
        let mut histogram = new_histogram();
        let mut total = 0;
        for _ in 0..args.requests {
            let start = Instant::now();
            let body = match http.get(url).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            let _ = histogram.record(start.elapsed().as_micros().max(1) as u64);
            total = body.and_then(|b| b["total_events"].as_u64()).unwrap_or(0);
        }
        let ms = |q: f64| quantile_ms(&histogram, q);
        println!(
            "/stats {name} ({total} events): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms over {} queries",
            ms(0.5),
            ms(0.99),
            ms(1.0),
            args.requests
        );
        line.push_str(&format!(
            " q{i}_events={total} q{i}_p50={:.2} q{i}_p99={:.2}",
            ms(0.5),
            ms(0.99)
        ));
    }
    if args.result_line {
        println!("{line}");
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let url = match args.mode {
        Mode::Freshness => return freshness(&args, &http).await,
        Mode::Seed => return seed(&args, &http).await,
        Mode::Stats => return stats_latency(&args, &http).await,
        Mode::Single => format!("{}/event", args.url.trim_end_matches('/')),
        Mode::Batch => format!("{}/events", args.url.trim_end_matches('/')),
    };
    let events_per_request = match args.mode {
        Mode::Batch => args.batch as u64,
        Mode::Single | Mode::Freshness | Mode::Seed | Mode::Stats => 1,
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
