//! The MongoDB backend.
//!
//! The queue is a collection (the seed's `QUEUE_NAME`) keyed by event id. A worker claims
//! the oldest unclaimed events by stamping them with its token and a lease, then moves
//! them into `events` (also keyed by event id) and deletes them from the queue. The move
//! is idempotent, so a worker killed at any point loses nothing: its claim expires, and
//! the next worker redoes the move, skipping what was already inserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beacon_protocol::{PathCount, Stats, TimeRange};
use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use uuid::Uuid;

use crate::{
    ClaimedBatch, MoveOutcome, QueuedEvent, Result, StoreConfig, StoreError, from_millis, millis,
    new_claim_token,
};

const EVENTS: &str = "events";
const SALTS: &str = "salts";
const DUPLICATE_KEY: i32 = 11000;
/// How long an operation waits for a reachable server before the caller gets a 503.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// A MongoDB database holding the queue and `events`.
#[derive(Debug, Clone)]
pub struct MongoStore {
    queue: Collection<Document>,
    events: Collection<Document>,
    salts: Collection<Document>,
    description: String,
    claim_lease: Duration,
    /// Set once collections and indexes exist. Until then writes are refused, so that no
    /// insert creates a collection implicitly while another client runs `createIndexes`
    /// (SecantusDB deadlocks on that race; mongod merely builds indexes on live data).
    ready: Arc<AtomicBool>,
}

/// One process creates collections and indexes one at a time.
static DDL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NAMESPACE_EXISTS: i32 = 48;

impl MongoStore {
    pub(crate) async fn open(url: &str, config: &StoreConfig) -> Result<Self> {
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| StoreError::Config(format!("MONGO_URL cannot be parsed: {e}")))?;
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.app_name.get_or_insert_with(|| "beacon".to_owned());
        // Acknowledged means journaled: a queued event survives a database restart.
        options.write_concern = Some(WriteConcern::builder().journal(true).build());
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| "beacon".to_owned());
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        let client = Client::with_options(options)?;
        let db = client.database(&database);
        Ok(Self {
            queue: db.collection(&config.queue_name),
            events: db.collection(EVENTS),
            salts: db.collection(SALTS),
            description: format!(
                "MongoDB database `{database}` on {} (queue `{}`)",
                hosts.join(","),
                config.queue_name
            ),
            claim_lease: config.claim_lease,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.description.clone()
    }

    pub(crate) async fn ensure_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ddl = DDL.lock().await;
        let db = self.queue.namespace().db;
        let database = self.queue.client().database(&db);
        for name in [self.queue.name(), self.events.name(), self.salts.name()] {
            match database.create_collection(name).await {
                Ok(()) => {}
                Err(e) if command_code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let indexes = [
            (&self.queue, doc! { "ingested_at": 1 }),
            (&self.events, doc! { "site_id": 1, "timestamp": 1 }),
        ];
        for (collection, keys) in indexes {
            collection
                .create_index(IndexModel::builder().keys(keys).build())
                .await?;
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    fn check_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "collections and indexes are not created yet".to_owned(),
            ))
        }
    }

    pub(crate) async fn enqueue(&self, events: &[QueuedEvent]) -> Result<()> {
        self.check_ready()?;
        let docs: Vec<Document> = events.iter().map(to_queue_doc).collect();
        match self.queue.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicate_keys(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn daily_salt(
        &self,
        day: &str,
        oldest_kept: &str,
        fresh: [u8; 32],
    ) -> Result<Vec<u8>> {
        self.check_ready()?;
        let salt = Binary {
            subtype: BinarySubtype::Generic,
            bytes: fresh.to_vec(),
        };
        let upsert = || {
            self.salts
                .find_one_and_update(
                    doc! { "_id": day },
                    doc! { "$setOnInsert": { "salt": salt.clone() } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
        };
        // Two servers may upsert the same new day at once; the loser sees a duplicate key
        // and reads the winner's salt.
        let stored = match upsert().await {
            Err(e) if command_code(&e) == Some(DUPLICATE_KEY) || only_duplicate_keys(&e) => {
                upsert().await?
            }
            other => other?,
        };
        let bytes = stored
            .as_ref()
            .and_then(|d| d.get_binary_generic("salt").ok())
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("salt for {day} is missing")))?;
        self.salts
            .delete_many(doc! { "_id": { "$lt": oldest_kept } })
            .await?;
        Ok(bytes)
    }

    pub(crate) async fn claim(&self, max: usize) -> Result<ClaimedBatch> {
        self.check_ready()?;
        let token = new_claim_token();
        let now = BsonDateTime::now();
        let unclaimed = doc! { "claimed_until": { "$lt": now } };
        let candidates: Vec<Document> = self
            .queue
            .find(unclaimed.clone())
            .sort(doc! { "ingested_at": 1 })
            .limit(i64::try_from(max).unwrap_or(i64::MAX))
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let ids: Vec<Bson> = candidates
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        if ids.is_empty() {
            return Ok(ClaimedBatch {
                token,
                events: Vec::new(),
            });
        }
        let lease_end = chrono::Duration::from_std(self.claim_lease)
            .map(|lease| bson_time(Utc::now() + lease))
            .unwrap_or_else(|_| BsonDateTime::now());
        // Only still-unclaimed events change hands: a racing worker takes the rest.
        let mut filter = unclaimed;
        filter.insert("_id", doc! { "$in": ids.clone() });
        self.queue
            .update_many(
                filter,
                doc! { "$set": { "claim": &token, "claimed_until": lease_end } },
            )
            .await?;
        let mut claimed: Vec<QueuedEvent> = self
            .queue
            .find(doc! { "_id": { "$in": ids }, "claim": &token })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(from_doc)
            .collect::<Result<_>>()?;
        claimed.sort_by_key(|e| (e.ingested_at, e.event_id));
        Ok(ClaimedBatch {
            token,
            events: claimed,
        })
    }

    /// Inserts the batch into `events`, unordered, then deletes it from the queue.
    ///
    /// No multi-document transaction: a worker killed inside one leaves it open until the
    /// server's transaction lifetime runs out (60 s on mongod), stalling every other
    /// worker that touches those documents. The move is idempotent instead: events are
    /// keyed by id, so after a crash between the two steps the next claim re-inserts
    /// them as duplicates, which are skipped, and deletes them.
    pub(crate) async fn move_batch(&self, batch: &ClaimedBatch) -> Result<MoveOutcome> {
        self.check_ready()?;
        let processed_at = BsonDateTime::now();
        let docs: Vec<Document> = batch
            .events
            .iter()
            .map(|e| {
                let mut d = to_queue_doc(e);
                d.remove("claimed_until");
                d.insert("processed_at", processed_at);
                d
            })
            .collect();
        let duplicates = match self.events.insert_many(docs).ordered(false).await {
            Ok(_) => 0,
            Err(e) if only_duplicate_keys(&e) => duplicate_count(&e),
            Err(e) => return Err(e.into()),
        };
        let ids: Vec<String> = batch
            .events
            .iter()
            .map(|e| e.event_id.to_string())
            .collect();
        self.queue
            .delete_many(doc! { "_id": { "$in": ids } })
            .await?;
        Ok(MoveOutcome {
            inserted: batch.len() - duplicates,
            duplicates,
        })
    }

    pub(crate) async fn stats(&self, range: &TimeRange) -> Result<Stats> {
        let mut filter = doc! { "site_id": &range.site_id };
        let mut time = Document::new();
        if let Some(from) = range.from {
            time.insert("$gte", bson_time(from));
        }
        if let Some(to) = range.to {
            time.insert("$lt", bson_time(to));
        }
        if !time.is_empty() {
            filter.insert("timestamp", time);
        }
        if let Some(t) = &range.event_type {
            filter.insert("event_type", t);
        }
        let count_filter = filter.clone();
        let total = async { Ok(self.events.count_documents(count_filter).await?) };

        let mut with_user = filter.clone();
        with_user.insert("user_id", doc! { "$type": "string" });
        let users = self.count_distinct(with_user, "$user_id");

        let mut with_path = filter;
        with_path.insert("path", doc! { "$type": "string" });
        let top = async { Ok(self.top_paths(with_path, range.limit).await?) };

        let (total, users, top_paths) = tokio::try_join!(total, users, top)?;
        Ok(Stats {
            total_events: total,
            unique_users: users,
            top_paths,
        })
    }

    async fn count_distinct(&self, filter: Document, field: &str) -> Result<u64> {
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$group": { "_id": field } },
            doc! { "$count": "n" },
        ];
        let rows: Vec<Document> = self.events.aggregate(pipeline).await?.try_collect().await?;
        Ok(rows.first().map_or(0, |d| count_field(d, "n")))
    }

    async fn top_paths(
        &self,
        filter: Document,
        limit: u32,
    ) -> Result<Vec<PathCount>, mongodb::error::Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$group": { "_id": "$path", "count": { "$sum": 1 } } },
            doc! { "$sort": { "count": -1, "_id": 1 } },
            doc! { "$limit": i64::from(limit) },
        ];
        let rows: Vec<Document> = self.events.aggregate(pipeline).await?.try_collect().await?;
        Ok(rows
            .iter()
            .filter_map(|d| {
                Some(PathCount {
                    path: d.get_str("_id").ok()?.to_owned(),
                    count: count_field(d, "count"),
                })
            })
            .collect())
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64> {
        self.check_ready()?;
        Ok(self.queue.count_documents(doc! {}).await?)
    }

    pub(crate) async fn event_ids(&self, site_id: &str) -> Result<Vec<Uuid>> {
        let docs: Vec<Document> = self
            .events
            .find(doc! { "site_id": site_id })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| {
                d.get_str("_id")
                    .ok()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("bad event _id in {d}")))
            })
            .collect()
    }
}

fn bson_time(t: chrono::DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(millis(t))
}

fn count_field(d: &Document, field: &str) -> u64 {
    match d.get(field) {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) => *n as u64,
        _ => 0,
    }
}

fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn duplicate_count(e: &mongodb::error::Error) -> usize {
    match &*e.kind {
        ErrorKind::InsertMany(err) => err.write_errors.as_ref().map_or(0, Vec::len),
        _ => 0,
    }
}

/// True when every write error of an insert is a duplicate key: those events are already
/// queued, which is what the caller wanted.
fn only_duplicate_keys(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(err) => {
            err.write_concern_error.is_none()
                && err
                    .write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

fn to_queue_doc(e: &QueuedEvent) -> Document {
    let mut d = doc! {
        "_id": e.event_id.to_string(),
        "site_id": &e.site_id,
        "event_type": &e.event_type,
        "path": e.path.as_deref().map_or(Bson::Null, Bson::from),
        "user_id": e.user_id.as_deref().map_or(Bson::Null, Bson::from),
        "timestamp": bson_time(e.timestamp),
        "ingested_at": bson_time(e.ingested_at),
        "claimed_until": BsonDateTime::from_millis(0), // unclaimed
    };
    if let Some(props) = &e.props {
        // A JSON object always converts to a BSON document.
        if let Ok(Bson::Document(p)) = Bson::try_from(serde_json::Value::Object(props.clone())) {
            d.insert("props", p);
        }
    }
    d
}

fn from_doc(d: &Document) -> Result<QueuedEvent> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("queue document lacks {what}: {d}"));
    let opt_str = |k: &str| d.get_str(k).ok().map(str::to_owned);
    Ok(QueuedEvent {
        event_id: d
            .get_str("_id")
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| corrupt("_id"))?,
        site_id: opt_str("site_id").ok_or_else(|| corrupt("site_id"))?,
        event_type: opt_str("event_type").ok_or_else(|| corrupt("event_type"))?,
        path: opt_str("path"),
        user_id: opt_str("user_id"),
        timestamp: d
            .get_datetime("timestamp")
            .map_err(|_| corrupt("timestamp"))
            .and_then(|t| from_millis(t.timestamp_millis()))?,
        ingested_at: d
            .get_datetime("ingested_at")
            .map_err(|_| corrupt("ingested_at"))
            .and_then(|t| from_millis(t.timestamp_millis()))?,
        props: match d.get_document("props") {
            Ok(p) => match Bson::Document(p.clone()).into_relaxed_extjson() {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            },
            Err(_) => None,
        },
    })
}
