//! Housekeeping on every backend: raw events past the retention window go and their
//! totals stay; salts of finished days are forgotten.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use beacon_protocol::StatsQuery;
use beacon_testkit::TestBackend;
use beacon_testkit::store::{all_stats, drain, enqueue, open, page_view, stored_ids};
use chrono::{TimeDelta, Utc};

#[tokio::test]
async fn retention_deletes_old_raw_events_and_keeps_their_totals() {
    for b in TestBackend::all() {
        let store = open(&b).await;
        let now = Utc::now();
        let old: Vec<_> = (0..1500)
            .map(|i| {
                page_view(
                    "s",
                    "/old",
                    Some(&format!("u{i}")),
                    now - TimeDelta::days(40),
                )
            })
            .collect();
        let new = vec![page_view("s", "/new", Some("u0"), now)];
        for chunk in old.chunks(500) {
            enqueue(&store, chunk.to_vec()).await;
        }
        enqueue(&store, new.clone()).await;
        drain(&store).await;
        let before = all_stats(&store, "s").await;
        let retention = Some(Duration::from_secs(30 * 24 * 3600));
        let expired = beacon_worker::housekeeping::sweep(&store, retention)
            .await
            .unwrap();
        assert_eq!(expired, 1500, "{}: in batches of 1,000", b.name);
        assert_eq!(
            stored_ids(&store, "s").await,
            vec![new[0].event_id],
            "{}",
            b.name
        );
        // Totals come from the rollups, which stay.
        assert_eq!(all_stats(&store, "s").await, before, "{}", b.name);
        let mut recent = StatsQuery::new("s");
        recent.from = Some(beacon_protocol::DateBound::Instant(
            now - TimeDelta::days(1),
        ));
        assert_eq!(
            store
                .stats(&recent.resolve().unwrap())
                .await
                .unwrap()
                .total_events,
            1
        );
        // Nothing more to do.
        assert_eq!(
            beacon_worker::housekeeping::sweep(&store, retention)
                .await
                .unwrap(),
            0
        );
    }
}

#[tokio::test]
async fn salts_of_finished_days_are_forgotten_on_a_timer() {
    for b in TestBackend::all() {
        let store = open(&b).await;
        let today = Utc::now().date_naive();
        let old = today - TimeDelta::days(3);
        // Today's first: asking for a day forgets only the days before the one before it.
        assert_eq!(store.daily_salt(today, [2; 32]).await.unwrap(), vec![2; 32]);
        assert_eq!(store.daily_salt(old, [1; 32]).await.unwrap(), vec![1; 32]);
        beacon_worker::housekeeping::sweep(&store, None)
            .await
            .unwrap();
        // Forgotten: asked again, the day gets the new salt offered.
        assert_eq!(
            store.daily_salt(old, [3; 32]).await.unwrap(),
            vec![3; 32],
            "{}",
            b.name
        );
        assert_eq!(
            store.daily_salt(today, [4; 32]).await.unwrap(),
            vec![2; 32],
            "{}",
            b.name
        );
    }
}
