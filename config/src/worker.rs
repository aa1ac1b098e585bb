//! `beacon-worker`'s settings: the polling loop's and the store's.

use std::time::Duration;

use beacon_store::StoreConfig;
use clap::Parser;

use crate::observe::{Observe, ObserveArgs};
use crate::store::StoreArgs;
use crate::{Args, ConfigError};

/// Most events a worker may claim at once.
const MAX_BATCH_SIZE: u64 = 100_000;

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `BATCH_SIZE`: most events moved per batch.
    pub batch_size: usize,
    /// `POLL_MS`: polls of an idle queue start this far apart.
    pub poll_interval: Duration,
    /// `RETENTION_DAYS`: raw events older than this are deleted (rollups stay); `None`
    /// keeps them forever.
    pub retention: Option<Duration>,
    /// Where the queue and events live.
    pub store: StoreConfig,
    /// Log format and metrics.
    pub observe: Observe,
}

/// Moves queued events into the events store, in batches.
#[derive(Debug, Clone, Parser)]
#[command(name = "beacon-worker", version, about, long_about = None)]
struct WorkerArgs {
    #[command(flatten)]
    polling: PollingArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    observe: ObserveArgs,
}

/// The polling loop's settings, shared with the server's worker inside.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PollingArgs {
    /// Most events moved per batch.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_SIZE))]
    batch_size: u64,
    /// How often the worker polls an idle queue, in milliseconds: polls start this far
    /// apart.
    #[arg(long, env = "POLL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    poll_ms: u64,
    /// Delete raw events older than this many days, in small batches; totals in the
    /// rollups stay. Unset: keep raw events forever.
    #[arg(long, env = "RETENTION_DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    retention_days: Option<u64>,
}

impl PollingArgs {
    pub(crate) fn resolve(&self, store: StoreConfig, observe: Observe) -> WorkerConfig {
        WorkerConfig {
            // At most MAX_BATCH_SIZE, checked by the parser.
            batch_size: usize::try_from(self.batch_size).unwrap_or(usize::MAX),
            poll_interval: Duration::from_millis(self.poll_ms),
            retention: self
                .retention_days
                .map(|days| Duration::from_secs(days * 24 * 3600)),
            store,
            observe,
        }
    }
}

impl WorkerConfig {
    /// Reads `.env`, the environment and the command line.
    pub fn load() -> Result<Self, ConfigError> {
        WorkerArgs::load()
    }

    /// Every setting at its default, whatever the environment says.
    pub fn defaults() -> Self {
        WorkerArgs::defaults()
    }
}

impl Args for WorkerArgs {
    type Config = WorkerConfig;
    const NAME: &'static str = "beacon-worker";

    fn resolve(&self) -> Result<WorkerConfig, clap::Error> {
        Ok(self
            .polling
            .resolve(self.store.store_config()?, self.observe.resolve()))
    }
}

#[cfg(test)]
mod tests {
    use beacon_store::Backend;

    use super::*;

    fn parse(args: &[&str]) -> Result<WorkerConfig, clap::Error> {
        WorkerArgs::without_env(args)
    }

    #[test]
    fn defaults_are_the_original_designs() {
        let c = WorkerConfig::defaults();
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.poll_interval, Duration::from_millis(200));
        assert_eq!(c.store.queue_name, "events_queue");
        assert!(matches!(c.store.backend, Backend::Embedded { .. }));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("BATCH_SIZE", "lots"),
            ("BATCH_SIZE", "0"),
            ("BATCH_SIZE", "100001"),
            ("POLL_MS", "-5"),
            ("QUEUE_NAME", "a.b"),
            ("QUEUE_NAME", "rollups"),
            ("MONGO_URL", "postgres://x"),
        ] {
            let flag = format!("--{}={value}", var.to_lowercase().replace('_', "-"));
            let err = parse(&[&flag]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn mongo_url_selects_mongo_and_blank_means_unset() {
        let c = parse(&["--mongo-url=mongodb://localhost:27017/test_db"]).unwrap();
        assert!(matches!(c.store.backend, Backend::Mongo { .. }));
        let c = parse(&["--mongo-url="]).unwrap();
        assert!(matches!(c.store.backend, Backend::Embedded { .. }));
    }
}
