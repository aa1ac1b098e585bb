//! An export of a million events streams with flat memory: the server reads a page at a
//! time and writes it out, whatever the total.
#![allow(clippy::unwrap_used)]

mod common;

use beacon_testkit::TestBackend;
use beacon_testkit::store::{open, page_view};
use chrono::{TimeDelta, Utc};
use common::{TestApp, config};

const EVENTS: usize = 1_000_000;
const ADMIN: &str = "admin-token-for-tests-0123456789";

/// This process's resident memory, in MB.
fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

#[tokio::test]
async fn a_million_events_export_with_flat_memory() {
    let b = TestBackend::embedded();
    let started = std::time::Instant::now();
    {
        // Seeded through the store, before the server owns the files.
        let store = open(&b).await;
        let start = Utc::now() - TimeDelta::days(10);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        for chunk in 0..EVENTS / 5000 {
            let events = (0..5000)
                .map(|i| {
                    let n = chunk * 5000 + i;
                    let at = start + TimeDelta::milliseconds(n as i64 * 800);
                    page_view("big", &format!("/p/{}", n % 1000), Some("u"), at)
                })
                .collect();
            store.enqueue(events, deadline).await.unwrap();
        }
        loop {
            let batch = store.claim(5000).await.unwrap();
            if batch.is_empty() {
                break;
            }
            store.move_batch(&batch).await.unwrap();
        }
    }
    eprintln!("seeded in {:?}", started.elapsed());
    let mut c = config(b.config.clone(), true);
    c.admin_token = Some(ADMIN.to_owned());
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    let baseline = rss_mb();
    let mut response = app
        .http
        .get(app.url("/api/sites/big/export"))
        .bearer_auth(ADMIN)
        .timeout(std::time::Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut bytes, mut lines, mut peak) = (0_usize, 0_usize, baseline);
    let mut sampled = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        if bytes - sampled > 8 << 20 {
            sampled = bytes;
            peak = peak.max(rss_mb());
        }
    }
    eprintln!("exported {} MB in {:?}", bytes >> 20, started.elapsed());
    assert_eq!(lines, EVENTS);
    assert!(bytes > 150 << 20, "{bytes} bytes exported");
    assert!(
        peak - baseline < 64,
        "memory grew by {} MB while {} MB streamed",
        peak - baseline,
        bytes >> 20
    );
    app.stop().await;
}
