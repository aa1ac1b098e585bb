//! Configuration from the environment (and `.env`), with the seed's variable names.
//!
//! Every value is checked at start-up; a bad one stops the process with the variable's
//! name and what was wrong, rather than surfacing later as a confusing failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use beacon_store::{Backend, DEFAULT_QUEUE_NAME, StoreConfig, validate_queue_name};

/// A variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A snapshot of the environment to read settings from. Tests build one from pairs.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Loads `.env` (if there is one) into the process environment, then reads it.
    /// Variables already set win over `.env`.
    pub fn load() -> Result<Self, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError {
                    var: ".env",
                    value: String::new(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(Self::from_process())
    }

    /// The process environment as it is.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Given variables only.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The variable's value, if set and not blank.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Parses a variable, or returns `default` when it is unset.
    pub fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError {
                var,
                value: raw.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Parses a positive whole number, or returns `default`.
    pub fn positive(&self, var: &'static str, default: u64) -> Result<u64, ConfigError> {
        let n = self.parse(var, default)?;
        if n == 0 {
            return Err(ConfigError {
                var,
                value: "0".to_owned(),
                reason: "must be greater than zero".to_owned(),
            });
        }
        Ok(n)
    }

    /// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`.
    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError {
                var,
                value: other.to_owned(),
                reason: "expected true or false".to_owned(),
            }),
        }
    }

    /// The store: MongoDB when `MONGO_URL` is set, otherwise the embedded store in
    /// `DATA_DIR` (default `./beacon-data`). `QUEUE_NAME` names the queue.
    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        let backend = match self.get("MONGO_URL") {
            Some(url) => {
                if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
                    return Err(ConfigError {
                        var: "MONGO_URL",
                        // The URL may hold a password: show only its scheme.
                        value: url.split("://").next().unwrap_or_default().to_owned(),
                        reason: "must start with mongodb:// or mongodb+srv://".to_owned(),
                    });
                }
                Backend::Mongo {
                    url: url.to_owned(),
                }
            }
            None => Backend::Embedded {
                data_dir: PathBuf::from(self.get("DATA_DIR").unwrap_or("./beacon-data")),
            },
        };
        let queue_name = self
            .get("QUEUE_NAME")
            .unwrap_or(DEFAULT_QUEUE_NAME)
            .to_owned();
        validate_queue_name(&queue_name).map_err(|reason| ConfigError {
            var: "QUEUE_NAME",
            value: queue_name.clone(),
            reason,
        })?;
        let mut config = StoreConfig::new(backend);
        config.queue_name = queue_name;
        config.claim_lease = Duration::from_millis(
            self.positive("CLAIM_LEASE_MS", config.claim_lease.as_millis() as u64)?,
        );
        Ok(config)
    }
}

/// The worker's settings: the seed's `BATCH_SIZE` and `POLL_MS`, and the store.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Most events moved per batch.
    pub batch_size: usize,
    /// Pause between polls of an empty queue.
    pub poll_interval: Duration,
    /// Where the queue and events live.
    pub store: StoreConfig,
}

impl WorkerConfig {
    /// Reads `BATCH_SIZE` (1000), `POLL_MS` (200) and the store settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let batch_size = env.positive("BATCH_SIZE", 1000)?;
        if batch_size > 100_000 {
            return Err(ConfigError {
                var: "BATCH_SIZE",
                value: batch_size.to_string(),
                reason: "must be at most 100000".to_owned(),
            });
        }
        Ok(Self {
            batch_size: batch_size as usize,
            poll_interval: Duration::from_millis(env.positive("POLL_MS", 200)?),
            store: env.store_config()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let c = WorkerConfig::from_env(&Env::default()).unwrap();
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
            ("POLL_MS", "-5"),
            ("QUEUE_NAME", "a.b"),
            ("MONGO_URL", "postgres://x"),
        ] {
            let err = WorkerConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn mongo_url_selects_mongo() {
        let env = Env::from_pairs([("MONGO_URL", "mongodb://localhost:27017/test_db")]);
        let c = WorkerConfig::from_env(&env).unwrap();
        assert!(matches!(c.store.backend, Backend::Mongo { .. }));
    }
}
