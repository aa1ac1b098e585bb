//! Driving a store directly, as the worker and server would.

use beacon_protocol::time::truncate_to_millis;
use beacon_protocol::{Stats, StatsQuery};
use beacon_store::{ClaimedBatch, EventsPage, QueuedEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::TestBackend;

/// A page view of `site` on `path` by `user` at `ts`, with a fresh id.
pub fn page_view(site: &str, path: &str, user: Option<&str>, ts: DateTime<Utc>) -> QueuedEvent {
    QueuedEvent {
        event_id: Uuid::now_v7(),
        site_id: site.into(),
        event_type: "page_view".into(),
        path: Some(path.into()),
        user_id: user.map(Into::into),
        timestamp: truncate_to_millis(ts),
        ingested_at: truncate_to_millis(Utc::now()),
        props: None,
        context: beacon_store::Context::default(),
        continues: None,
    }
}

/// The backend's store, ready (collections and indexes created).
pub async fn open(backend: &TestBackend) -> Store {
    let store = Store::open(backend.config.clone())
        .await
        .expect("store opens");
    store.ensure_ready().await.expect("store gets ready");
    store
}

/// Queues, with a generous deadline, and checks that nothing was refused. Retries on
/// `Unavailable` (the `503` an SDK retries): on a loaded machine a write can outlast
/// the tests' short claim lease, and is then not stored.
pub async fn enqueue(store: &Store, events: Vec<QueuedEvent>) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        match store.enqueue(events.clone(), deadline).await {
            Ok(refused) => {
                assert!(refused.is_empty(), "refused: {refused:?}");
                return;
            }
            Err(StoreError::Unavailable(why)) if std::time::Instant::now() < give_up => {
                eprintln!("enqueue: {why}; again");
            }
            Err(e) => panic!("enqueue: {e:?}"),
        }
    }
}

/// Claims and moves batches of 100 until the queue is empty; answers how many events
/// were newly stored.
pub async fn drain(store: &Store) -> usize {
    let mut moved = 0;
    loop {
        let batch = store.claim(100).await.expect("claim");
        if batch.is_empty() {
            return moved;
        }
        moved += move_patiently(store, &batch).await;
    }
}

/// Waits until workers running elsewhere have emptied the queue; panics, naming `what`,
/// if they have not within `within`.
pub async fn wait_until_drained(store: &Store, within: std::time::Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    while store.queue_depth().await.expect("queue depth") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the queue was not drained within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Queues `n` page views of `site`, each by a user of its own, in enqueues of 50: on
/// MongoDB each is a batch of its own, which claims join. Answers the events.
pub async fn enqueue_backlog(store: &Store, site: &str, n: usize) -> Vec<QueuedEvent> {
    let events: Vec<_> = (0..n)
        .map(|i| page_view(site, "/", Some(&format!("u{i}")), Utc::now()))
        .collect();
    for chunk in events.chunks(50) {
        enqueue(store, chunk.to_vec()).await;
    }
    events
}

/// A worker that goes through a backlog in batches of 100, polling every 5 ms.
pub fn backlog_worker(store: beacon_store::StoreConfig) -> beacon_config::WorkerConfig {
    beacon_config::WorkerConfig {
        batch_size: 100,
        poll_interval: std::time::Duration::from_millis(5),
        retention: None,
        store,
        observe: beacon_config::Observe::default(),
    }
}

/// Moves `batch`; answers how many events were newly stored. As the worker does, a
/// failed move is tried again: a move is idempotent, and the test database drops
/// connections when the machine is loaded.
pub async fn move_patiently(store: &Store, batch: &ClaimedBatch) -> usize {
    let mut tries = 0;
    loop {
        match store.move_batch(batch).await {
            Ok(outcome) => return outcome.inserted,
            Err(e) if tries < 5 => eprintln!("move: {e}; again"),
            Err(e) => panic!("move: {e:?}"),
        }
        tries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `/stats` for all of `site`'s time.
pub async fn all_stats(store: &Store, site: &str) -> Stats {
    let range = StatsQuery::new(site).resolve().expect("a valid query");
    store.stats(&range).await.expect("stats")
}

/// The ids of every processed event of `site`, read page by page as an export would.
pub async fn stored_ids(store: &Store, site: &str) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut page = EventsPage::first(site, 1000);
    loop {
        let events = store.events_page(&page).await.expect("events page");
        ids.extend(events.iter().map(|e| e.event_id));
        match events.last() {
            Some(last) if events.len() == page.limit => page = page.next(last),
            _ => return ids,
        }
    }
}

/// Makes the database refuse every event on `/poison` for good: a trigger on the
/// embedded store, a validator on MongoDB. Call before opening the store.
pub async fn poison(backend: &TestBackend) {
    match &backend.config.backend {
        beacon_store::Backend::Embedded { data_dir } => {
            // The store creates `events` on open; create it first, as it would, so the
            // trigger has a table. The schema below is checked by the store's own
            // CREATE TABLE IF NOT EXISTS, which leaves an existing table alone.
            drop(open(backend).await);
            let conn =
                rusqlite::Connection::open(data_dir.join("beacon.db")).expect("beacon.db opens");
            conn.execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.path = '/poison'
                 BEGIN SELECT RAISE(ABORT, 'this path is refused'); END;",
            )
            .expect("the trigger is created");
        }
        beacon_store::Backend::Mongo { url } => {
            let client = mongodb::Client::with_uri_str(url)
                .await
                .expect("MONGO_URL parses");
            client
                .default_database()
                .expect("MONGO_URL names a database")
                .create_collection("events")
                .validator(mongodb::bson::doc! { "p": { "$ne": "/poison" } })
                .await
                .expect("the validator is set");
        }
    }
}

/// `e` as MongoDB's queue holds it (and `events` held it in its first layout), for
/// writing what another process or an earlier version would have left there.
pub fn raw_queue_doc(e: &QueuedEvent, batch: mongodb::bson::Bson) -> mongodb::bson::Document {
    mongodb::bson::doc! {
        "_id": e.event_id.to_string(),
        "site_id": &e.site_id,
        "event_type": &e.event_type,
        "path": e.path.clone(),
        "user_id": e.user_id.clone(),
        "timestamp": mongodb::bson::DateTime::from_millis(e.timestamp.timestamp_millis()),
        "ingested_at": mongodb::bson::DateTime::from_millis(e.ingested_at.timestamp_millis()),
        "batch": batch,
    }
}
