//! Seed mode: history for the read benchmarks, in visits of eight events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Args;

/// Events in one seeded visit.
const VISIT: u64 = 8;

/// Seed mode: history, oldest first, as fast as the server takes it.
pub(crate) async fn seed(args: &Args, http: &reqwest::Client) {
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
            let (total, users, paths, site) = (
                args.events,
                args.users,
                args.paths as u64,
                args.site.clone(),
            );
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
                            let at = end_ms - span_ms
                                + (i as i128 * span_ms as i128 / total as i128) as i64;
                            let path = match distinct_from {
                                Some(from) => format!("/d/{}", from + i),
                                None => format!("/page/{}", (i * 7919) % paths),
                            };
                            seed_event(&site, i, at, path, users)
                        })
                        .collect();
                    loop {
                        let sent = http
                            .post(format!("{base}/events"))
                            .json(&batch)
                            .send()
                            .await;
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

pub(crate) async fn queue_depth(http: &reqwest::Client, base: &str) -> Option<u64> {
    let health = http.get(format!("{base}/health")).send().await.ok()?;
    health.json::<serde_json::Value>().await.ok()?["queue_depth"].as_u64()
}

/// Event `i` of the seed: visits of [`VISIT`] events in a row, each visit by one of
/// `users`, arriving from one of a few sources with one of a few browsers.
fn seed_event(site: &str, i: u64, at: i64, path: String, users: u64) -> serde_json::Value {
    const REFERRERS: [Option<&str>; 5] = [
        None,
        Some("https://www.google.com/"),
        Some("https://news.ycombinator.com/item?id=1"),
        Some("https://duckduckgo.com/"),
        Some("https://blog.example.org/a-post"),
    ];
    const AGENTS: [&str; 4] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    ];
    let visit = i / VISIT;
    let mut event = serde_json::json!({
        "site_id": site,
        "event_type": if i.is_multiple_of(5) { "click" } else { "page_view" },
        "path": path,
        "user_id": format!("user{}", (visit * 104_729) % users),
        "timestamp": at,
        "event_id": uuid::Uuid::now_v7(),
        "user_agent": AGENTS[(visit % 4) as usize],
    });
    if i.is_multiple_of(VISIT) {
        if let Some(referrer) = REFERRERS[(visit % 5) as usize] {
            event["referrer"] = referrer.into();
        }
        if visit.is_multiple_of(7) {
            event["utm_source"] = "newsletter".into();
            event["utm_medium"] = "email".into();
            event["utm_campaign"] = format!("issue-{}", visit % 12).into();
        }
    }
    event
}
