//! The worker with a backlog claims the next batch while it moves one. Stopped, it moves
//! the batch it claimed ahead, rather than leave it claimed until its lease runs out.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use beacon_testkit::TestBackend;
use beacon_testkit::store::{
    backlog_worker, enqueue_backlog, open, stored_ids, wait_until_drained,
};

const EVENTS: u64 = 2000;

#[tokio::test]
async fn a_worker_stopped_amid_a_backlog_leaves_no_batch_claimed() {
    for mut b in TestBackend::all() {
        // Far longer than the test: a batch left claimed would stay stuck.
        b.config.claim_lease = Duration::from_secs(600);
        let store = open(&b).await;
        enqueue_backlog(&store, "s", EVENTS as usize).await;
        let config = backlog_worker(b.config.clone());

        // Stopped once a move is done, with most of the backlog still waiting.
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let watcher = store.clone();
        tokio::spawn(async move {
            while watcher.queue_depth().await.unwrap() == EVENTS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = stop.send(());
        });
        let moved_some = async move {
            let _ = stopped.await;
        };
        beacon_worker::run(config.clone(), store.clone(), moved_some).await;
        let left = store.queue_depth().await.unwrap();
        assert!(0 < left && left < EVENTS, "{}: {left} left", b.name);

        // The next worker finds nothing claimed, and moves every event left.
        let next = tokio::spawn(beacon_worker::run(
            config,
            store.clone(),
            std::future::pending(),
        ));
        wait_until_drained(&store, Duration::from_secs(30), b.name).await;
        next.abort();
        assert_eq!(
            stored_ids(&store, "s").await.len() as u64,
            EVENTS,
            "{}",
            b.name
        );
    }
}
