//! How to open the store: which backend, the queue's name, the claim lease.

use std::path::PathBuf;
use std::time::Duration;

/// Which database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A MongoDB deployment; the database is the URL's path.
    Mongo {
        /// The connection string. It may hold a password: never log it.
        url: String,
    },
    /// SQLite files inside this directory.
    Embedded {
        /// Created if missing.
        data_dir: PathBuf,
    },
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend.
    pub backend: Backend,
    /// The queue's collection (or table) name.
    pub queue_name: String,
    /// How long a worker's claim on a batch lasts before another worker may take it over.
    pub claim_lease: Duration,
    /// How long a MongoDB write of queued events may take before the enqueue fails (and
    /// its events are discarded rather than moved).
    pub write_timeout: Duration,
}

impl StoreConfig {
    /// The defaults for `backend`: queue `events_queue`, 30 s claim lease, 5 s write
    /// timeout.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            queue_name: DEFAULT_QUEUE_NAME.to_owned(),
            claim_lease: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// The queue's default collection (or table) name.
pub const DEFAULT_QUEUE_NAME: &str = "events_queue";

/// Collection and table names of Beacon's own, which the queue cannot take.
pub const RESERVED_NAMES: &[&str] = &[
    "events",
    "rollups",
    "salts",
    "batches",
    "values",
    "dead_letters",
    "meta",
    "dict",
    "rollup_dims",
    "queue_counts",
    "sites",
    "api_keys",
    "erasures",
    "visits",
    "visit_states",
    "event_types",
];

/// Checks a queue name: it becomes a collection or table name, so only plain identifiers,
/// and none of Beacon's own.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED_NAMES.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1 to 64 letters, digits or underscores, and none of {}",
            RESERVED_NAMES.join(", ")
        ))
    }
}
