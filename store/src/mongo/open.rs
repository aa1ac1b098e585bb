//! Connecting: client options, and the collections and indexes created at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, IndexModel};

use super::codec::{NAMESPACE_EXISTS, command_code};
use super::desk::BatchDesk;
use super::queue::QueueSink;
use super::salts::first_stored;
use super::{
    API_KEYS, BATCHES, DEAD_LETTERS, ERASURES, EVENT_TYPES, EVENTS, META, MongoStore, ROLLUPS,
    SALTS, SITES, VALUES, VISIT_STATES, events,
};
use crate::group::Writer;
use crate::rollup::hash::{self, Keys};
use crate::{Result, StoreConfig, StoreError};

/// How long an operation waits for a reachable server before the caller gets a 503.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The index of `events`' first layout (see `events`).
const FIRST_LAYOUT_INDEX: &str = "site_id_1_timestamp_1__id_1";

/// One process creates collections and indexes one at a time.
static DDL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl MongoStore {
    /// Sets up the client; connects lazily, so this succeeds while MongoDB is down.
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
        let ready = Arc::new(AtomicBool::new(false));
        let desk = BatchDesk::new(db.collection(BATCHES), config.claim_lease);
        let queue = db.collection(&config.queue_name);
        let sink = QueueSink::new(
            queue.clone(),
            db.collection(BATCHES),
            desk,
            Arc::clone(&ready),
            config.write_timeout,
        );
        Ok(Self {
            queue,
            events: db.collection(EVENTS),
            salts: db.collection(SALTS),
            rollups: db.collection(ROLLUPS),
            batches: db.collection(BATCHES),
            values: db.collection(VALUES),
            dead_letters: db.collection(DEAD_LETTERS),
            meta: db.collection(META),
            sites: db.collection(SITES),
            api_keys: db.collection(API_KEYS),
            erasures: db.collection(ERASURES),
            visit_states: db.collection(VISIT_STATES),
            event_types: db.collection(EVENT_TYPES),
            keys: Arc::default(),
            known_values: Arc::default(),
            known_types: Arc::default(),
            description: format!(
                "MongoDB database `{database}` on {} (queue `{}`)",
                hosts.join(","),
                config.queue_name
            )
            .into(),
            claim_lease: config.claim_lease,
            ready,
            writer: Writer::spawn(sink),
            finished: Arc::default(),
            unreturned: Arc::default(),
        })
    }

    /// Creates the collections and indexes and reads the install's secret, once per
    /// process.
    pub(crate) async fn ensure_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ddl = DDL.lock().await;
        let db = self.queue.namespace().db;
        let database = self.queue.client().database(&db);
        for name in [
            self.queue.name(),
            self.events.name(),
            self.salts.name(),
            self.rollups.name(),
            self.batches.name(),
            self.values.name(),
            self.dead_letters.name(),
            self.meta.name(),
            self.sites.name(),
            self.api_keys.name(),
            self.erasures.name(),
            self.visit_states.name(),
            self.event_types.name(),
        ] {
            match database.create_collection(name).await {
                Ok(()) => {}
                Err(e) if command_code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let indexes = [
            (&self.queue, doc! { "batch": 1 }),
            (
                &self.events,
                doc! { events::SITE: 1, events::TIME: 1, events::ID: 1 },
            ),
            (
                &self.rollups,
                doc! { "site_id": 1, "granularity": 1, "event_type": 1, "start": 1 },
            ),
            (&self.batches, doc! { "until": 1 }),
            (&self.api_keys, doc! { "site_id": 1 }),
            (&self.visit_states, doc! { "last": 1 }),
        ];
        for (collection, keys) in indexes {
            collection
                .create_index(IndexModel::builder().keys(keys).build())
                .await?;
        }
        self.backfill_event_types().await?;
        let keys = self.install_keys().await?;
        self.upgrade_events(&keys).await?;
        let _ = self.keys.set(keys);
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Rewrites `events` of the first layout, once per install: the search for old
    /// documents reads the whole collection, so a done rewrite is recorded in `meta`.
    async fn upgrade_events(&self, keys: &Keys) -> Result<()> {
        let done = doc! { "_id": "events_layout", "value": 2 };
        if self.meta.find_one(done).await?.is_some() {
            return Ok(());
        }
        self.rewrite_first_layout(keys).await?;
        // The first layout's index, on fields no document has any longer.
        if (self.events.list_index_names().await?).contains(&FIRST_LAYOUT_INDEX.to_owned()) {
            self.events.drop_index(FIRST_LAYOUT_INDEX).await?;
        }
        self.meta
            .update_one(
                doc! { "_id": "events_layout" },
                doc! { "$set": { "value": 2 } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The install's secret, created by whichever process gets there first.
    async fn install_keys(&self) -> Result<Keys> {
        let fresh = hash::new_secret().to_vec();
        let bytes = first_stored(&self.meta, "install_secret", "value", fresh).await?;
        Ok(Keys::from_secret(&hash::secret_from_bytes(&bytes)?))
    }
}
