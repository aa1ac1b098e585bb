//! The store's variables: which backend, the queue's name and the claim lease.

use std::path::PathBuf;
use std::time::Duration;

use beacon_store::{Backend, StoreConfig, validate_queue_name};

/// Where the queue and events live. Shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Use MongoDB at this connection string (the database is its path). Unset (or
    /// blank): the embedded store in DATA_DIR.
    #[arg(long, env = "MONGO_URL", hide_env_values = true)]
    pub mongo_url: Option<String>,
    /// The embedded store's directory: queue.db (the queue) and beacon.db (events,
    /// rollups, salts).
    #[arg(long, env = "DATA_DIR", default_value = "./beacon-data")]
    pub data_dir: PathBuf,
    /// The queue's collection or table.
    #[arg(long, env = "QUEUE_NAME", default_value = beacon_store::DEFAULT_QUEUE_NAME, value_parser = queue_name)]
    pub queue_name: String,
    /// How long a worker's claim on a batch lasts before another worker may take it
    /// over, in milliseconds.
    #[arg(long, env = "CLAIM_LEASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub claim_lease_ms: u64,
}

impl StoreArgs {
    /// The store's configuration.
    pub fn store_config(&self) -> Result<StoreConfig, clap::Error> {
        let url = self.mongo_url.as_deref().map(str::trim);
        let backend = match url.filter(|u| !u.is_empty()) {
            Some(url) => Backend::Mongo {
                url: mongo_url(url)?,
            },
            None => Backend::Embedded {
                data_dir: self.data_dir.clone(),
            },
        };
        let mut config = StoreConfig::new(backend);
        config.queue_name.clone_from(&self.queue_name);
        config.claim_lease = Duration::from_millis(self.claim_lease_ms);
        Ok(config)
    }
}

/// Checks a MongoDB connection string. Checked here rather than by clap, whose message
/// would show the whole value: it may hold a password, so this one shows the scheme.
fn mongo_url(url: &str) -> Result<String, clap::Error> {
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        Ok(url.to_owned())
    } else {
        let scheme = url.split("://").next().unwrap_or_default();
        Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "invalid value for '--mongo-url <MONGO_URL>': must start with mongodb:// or mongodb+srv:// (it starts with `{scheme}`)\n"
            ),
        ))
    }
}

fn queue_name(name: &str) -> Result<String, String> {
    validate_queue_name(name)?;
    Ok(name.to_owned())
}
