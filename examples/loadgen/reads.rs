//! Read latency: freshness, `/stats` and the query API, one client, back to back.

use std::time::{Duration, Instant};

use super::{Args, new_histogram, quantile_ms};

/// Time from an accepted event to `/stats` counting it, in microseconds.
pub(crate) async fn freshness(args: &Args, http: &reqwest::Client) {
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

/// Stats mode: one client, queries back to back.
pub(crate) async fn stats_latency(args: &Args, http: &reqwest::Client) {
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

/// Query mode: `POST /api/v2/query`, the dashboard's queries from rollups
/// `--requests` times each, then filtered ones that scan raw events `--raw-requests`
/// times each: over the last 3 days and over 30 days.
pub(crate) async fn query_latency(args: &Args, http: &reqwest::Client) {
    let url = format!("{}/api/v2/query", args.url.trim_end_matches('/'));
    let today = chrono::Utc::now().date_naive();
    let three_days = [
        (today - chrono::Duration::days(2)).to_string(),
        today.to_string(),
    ];
    let firefox = serde_json::json!([["is", "visit:browser", ["Firefox"]]]);
    let query = |metrics: &[&str], dims: &[&str], range: serde_json::Value| {
        serde_json::json!({
            "site_id": args.site, "metrics": metrics, "dimensions": dims, "date_range": range,
            "pagination": {"limit": 10},
        })
    };
    let visit_metrics = [
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
    ];
    let mut filtered_3d = query(&["visitors", "visits", "pageviews"], &[], three_days.into());
    filtered_3d["filters"] = firefox.clone();
    let mut filtered_30d = query(&["visitors", "visits", "pageviews"], &[], "30d".into());
    filtered_30d["filters"] = firefox;
    let kinds = [
        (
            "aggregate",
            query(&visit_metrics, &[], "30d".into()),
            args.requests,
        ),
        (
            "time:day",
            query(&["visitors", "pageviews"], &["time:day"], "30d".into()),
            args.requests,
        ),
        (
            "visit:source",
            query(
                &["visitors", "visits", "bounce_rate"],
                &["visit:source"],
                "30d".into(),
            ),
            args.requests,
        ),
        (
            "event:page",
            query(&["visitors", "pageviews"], &["event:page"], "30d".into()),
            args.requests,
        ),
        ("raw_3d", filtered_3d, args.raw_requests),
        ("raw_30d", filtered_30d, args.raw_requests),
    ];
    let mut line = String::from("RESULT");
    for (name, body, requests) in kinds {
        let mut histogram = new_histogram();
        let mut errors = 0;
        let mut last = serde_json::Value::Null;
        for _ in 0..requests {
            let start = Instant::now();
            let answer = http.post(&url).json(&body).send().await;
            let ok = match answer {
                Ok(r) if r.status().is_success() => {
                    last = r.json().await.unwrap_or_default();
                    true
                }
                Ok(r) => {
                    eprintln!(
                        "{name}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    false
                }
                Err(e) => {
                    eprintln!("{name}: {e}");
                    false
                }
            };
            if ok {
                let _ = histogram.record(start.elapsed().as_micros().max(1) as u64);
            } else {
                errors += 1;
            }
        }
        let ms = |q: f64| quantile_ms(&histogram, q);
        let first = &last["results"][0];
        println!(
            "query {name}: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms over {requests} queries, {errors} errors; first row {first}",
            ms(0.5),
            ms(0.99),
            ms(1.0),
        );
        line.push_str(&format!(
            " {name}_p50={:.2} {name}_p99={:.2} {name}_errors={errors}",
            ms(0.5),
            ms(0.99)
        ));
    }
    if args.result_line {
        println!("{line}");
    }
}
