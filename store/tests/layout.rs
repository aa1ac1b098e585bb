//! Events as stored: a store made by an earlier version (of either backend) opens with
//! every value it held, and the embedded store's files give their space back once the
//! queue is drained or events expire.
#![allow(clippy::unwrap_used)]

use beacon_store::{Context, EventsPage, QueuedEvent, Store};
use beacon_testkit::TestBackend;
use beacon_testkit::store::{drain, enqueue, open, page_view, raw_queue_doc};
use chrono::{TimeZone, Utc};
use serde_json::json;

/// `events` as the first layout made it: text ids, and every text in every row.
const FIRST_LAYOUT: &str = "CREATE TABLE events (
    event_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, event_type TEXT NOT NULL, path TEXT,
    user_id TEXT, timestamp INTEGER NOT NULL, ingested_at INTEGER NOT NULL, props TEXT,
    hostname TEXT, referrer TEXT, source TEXT, channel TEXT, utm_source TEXT,
    utm_medium TEXT, utm_campaign TEXT, utm_content TEXT, utm_term TEXT, browser TEXT,
    browser_version TEXT, os TEXT, os_version TEXT, device TEXT, country TEXT,
    processed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX events_site_time ON events (site_id, timestamp);";

/// The first events of `site`, as a reader gets them.
async fn first_page(store: &Store, site: &str) -> Vec<QueuedEvent> {
    store
        .events_page(&EventsPage::first(site, 10))
        .await
        .unwrap()
}

/// What an earlier version's store held, for both backends: an event with every kind of
/// value (props that look like Extended JSON, quotes, an emoji, an empty field) and one
/// with nothing but its type.
fn held_events(at: chrono::DateTime<Utc>) -> (QueuedEvent, QueuedEvent) {
    let mut full = page_view("s", "/pricing", Some("u1"), at);
    full.props = json!({"plan": "pro", "seats": 3, "nested": {"$oid": "x"}})
        .as_object()
        .cloned();
    full.context = Context {
        hostname: Some("example.com".into()),
        referrer: Some("news.ycombinator.com/item".into()),
        source: Some("Hacker News".into()),
        channel: Some("Referral".into()),
        utm_campaign: Some("launch \"day\" \u{1f680}".into()),
        browser: Some("Firefox".into()),
        browser_version: Some("133".into()),
        device: Some("Desktop".into()),
        country: Some("".into()),
        ..Context::default()
    };
    let mut bare = page_view("s", "/", None, at + chrono::TimeDelta::milliseconds(1));
    bare.path = None;
    bare.event_type = "signup".into();
    (full, bare)
}

#[tokio::test]
async fn a_store_of_the_first_layout_opens_with_every_value_it_held() {
    let b = TestBackend::embedded();
    let dir = b.data_dir().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    let (full, bare) = held_events(at);
    let other_site = page_view("t", "/pricing", Some("u1"), at);
    let old = [full.clone(), bare.clone(), other_site.clone()];
    {
        let conn = rusqlite::Connection::open(dir.join("beacon.db")).unwrap();
        conn.execute_batch(FIRST_LAYOUT).unwrap();
        for e in &old {
            let mut values: Vec<rusqlite::types::Value> = vec![
                e.event_id.to_string().into(),
                e.site_id.clone().into(),
                e.event_type.clone().into(),
                e.path.clone().into(),
                e.user_id.clone().into(),
                e.timestamp.timestamp_millis().into(),
                e.ingested_at.timestamp_millis().into(),
                e.props
                    .as_ref()
                    .map(|p| serde_json::to_string(p).unwrap())
                    .into(),
            ];
            values.extend(e.context.values().map(|v| v.map(str::to_owned).into()));
            values.push(e.ingested_at.timestamp_millis().into());
            conn.execute(
                &format!(
                    "INSERT INTO events VALUES ({})",
                    vec!["?"; values.len()].join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .unwrap();
        }
    }

    let store = open(&b).await;
    assert_eq!(first_page(&store, "s").await, vec![full.clone(), bare]);
    assert_eq!(first_page(&store, "t").await, vec![other_site]);
    // The ids are still the key of exactly-once: a copy sent again is not stored again.
    enqueue(&store, vec![full]).await;
    assert_eq!(drain(&store).await, 0);
    assert_eq!(first_page(&store, "s").await.len(), 2);
}

/// `events` as the second layout made it: keyed by id, with an index on (site, time).
const SECOND_LAYOUT: &str = "
CREATE TABLE texts (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE);
CREATE TABLE events (
    id BLOB PRIMARY KEY, site INTEGER NOT NULL, time INTEGER NOT NULL,
    type INTEGER NOT NULL, path TEXT, user_id TEXT, ingested INTEGER NOT NULL,
    processed INTEGER NOT NULL, props TEXT, context INTEGER
) WITHOUT ROWID;
CREATE INDEX events_site_time ON events (site, time);
INSERT INTO texts (id, value) VALUES (1, 's'), (2, 'page_view');";

#[tokio::test]
async fn a_store_of_the_second_layout_opens_with_every_event_and_its_resends_caught() {
    let b = TestBackend::embedded();
    let dir = b.data_dir().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    let own_time = page_view("s", "/a", Some("u1"), at);
    // Sent without a timestamp: its time is its arrival.
    let mut server_timed = page_view("s", "/b", Some("u2"), at);
    server_timed.ingested_at = at;
    {
        let conn = rusqlite::Connection::open(dir.join("beacon.db")).unwrap();
        conn.execute_batch(SECOND_LAYOUT).unwrap();
        for e in [&server_timed, &own_time] {
            let time = e.timestamp.timestamp_millis();
            conn.execute(
                "INSERT INTO events VALUES (?1, 1, ?2, 2, ?3, ?4, ?5, 7, NULL, NULL)",
                rusqlite::params![
                    e.event_id.as_bytes(),
                    time,
                    e.path,
                    e.user_id,
                    e.ingested_at.timestamp_millis() - time,
                ],
            )
            .unwrap();
        }
    }

    let store = open(&b).await;
    let page = first_page(&store, "s").await;
    assert_eq!(page, vec![own_time.clone(), server_timed.clone()]);
    // Sent again, each arrives later; the one the server timed comes with a new time.
    let later = at + chrono::TimeDelta::seconds(3);
    let mut resent = server_timed.clone();
    (resent.timestamp, resent.ingested_at) = (later, later);
    let mut own_resent = own_time.clone();
    own_resent.ingested_at = later;
    let new = page_view("s", "/c", Some("u3"), at);
    enqueue(&store, vec![resent, own_resent, new]).await;
    assert_eq!(drain(&store).await, 1);

    // Once they expire, nothing of them is kept, not even the ids.
    let expired = store
        .expire_events(at + chrono::TimeDelta::days(1), 100)
        .await
        .unwrap();
    assert_eq!(expired, 3);
    let conn = rusqlite::Connection::open(dir.join("beacon.db")).unwrap();
    let ids: i64 = conn
        .query_row("SELECT COUNT(*) FROM server_timed", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ids, 0);
}

/// MongoDB's `events` of the first layout: text ids, long names, every context field.
#[tokio::test]
async fn mongo_events_of_the_first_layout_are_rewritten_with_every_value() {
    let Some(b) = TestBackend::mongo() else {
        return;
    };
    let beacon_store::Backend::Mongo { url } = &b.config.backend else {
        unreachable!("a MongoDB backend");
    };
    let db = mongodb::Client::with_uri_str(url)
        .await
        .unwrap()
        .default_database()
        .unwrap();
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    let (full, bare) = held_events(at);
    let old: Vec<mongodb::bson::Document> = [&full, &bare]
        .iter()
        .map(|e| {
            let batch = uuid::Uuid::now_v7().to_string();
            let mut d = raw_queue_doc(e, batch.into());
            d.insert("processed_at", mongodb::bson::DateTime::now());
            for (name, value) in Context::FIELDS.iter().zip(e.context.values()) {
                if let Some(value) = value {
                    d.insert(*name, value);
                }
            }
            if let Some(props) = &e.props {
                d.insert("props", serde_json::to_string(props).unwrap());
            }
            d
        })
        .collect();
    let mut broken = raw_queue_doc(&page_view("s", "/", None, at), "b".into());
    broken.remove("timestamp");
    db.collection("events")
        .insert_many(old.into_iter().chain([broken]))
        .await
        .unwrap();

    let store = open(&b).await;
    assert_eq!(first_page(&store, "s").await, vec![full.clone(), bare]);
    // Nothing of the first layout is left but the document it could not read (the
    // start went on), and the ids still catch a resend.
    let left = db
        .collection::<mongodb::bson::Document>("events")
        .count_documents(mongodb::bson::doc! { "site_id": { "$exists": true } })
        .await
        .unwrap();
    assert_eq!(left, 1);
    enqueue(&store, vec![full]).await;
    assert_eq!(drain(&store).await, 0);
}

#[tokio::test]
async fn files_give_their_space_back_once_drained_or_expired() {
    let b = TestBackend::embedded();
    let store = open(&b).await;
    let queue_file = b.data_dir().unwrap().join("queue.db");
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    let padding = "x".repeat(2000);
    let events: Vec<QueuedEvent> = (0..10_000)
        .map(|i| {
            let mut e = page_view("s", &format!("/{i}"), Some("u"), at);
            e.props = json!({ "padding": padding }).as_object().cloned();
            e
        })
        .collect();
    for chunk in events.chunks(1000) {
        enqueue(&store, chunk.to_vec()).await;
    }
    let full = size_after_checkpoint(&queue_file);
    assert!(full > 20_000_000, "the queue holds 20 MB: {full} bytes");
    assert_eq!(drain(&store).await, 10_000);
    let drained = size_after_checkpoint(&queue_file);
    // What stays is the free pages kept for the next fill (4 MiB) and the schema.
    assert!(drained < 5_000_000, "drained, the file is {drained} bytes");

    // The same for `beacon.db` once retention deletes the events.
    let db_file = b.data_dir().unwrap().join("beacon.db");
    let stored = size_after_checkpoint(&db_file);
    assert!(stored > 20_000_000, "the events take 20 MB: {stored} bytes");
    let expired = store
        .expire_events(at + chrono::TimeDelta::days(1), 100_000)
        .await
        .unwrap();
    assert_eq!(expired, 10_000);
    let emptied = size_after_checkpoint(&db_file);
    assert!(emptied < 5_000_000, "expired, the file is {emptied} bytes");
}

/// The file's size once its WAL is checkpointed into it.
fn size_after_checkpoint(path: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    std::fs::metadata(path).unwrap().len()
}
