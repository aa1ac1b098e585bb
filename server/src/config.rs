//! The server's settings, from the environment and `.env` (see `beacon_worker::config`).

use std::net::IpAddr;

use beacon_store::Backend;
use beacon_worker::{ConfigError, Env, WorkerConfig};

/// Everything `beacon-server` needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST`, default `0.0.0.0`: websites on other machines send to it.
    pub host: IpAddr,
    /// `PORT`, default 1000 as in the seed.
    pub port: u16,
    /// `RUN_WORKER`: run the worker inside the server. Defaults to on for the embedded
    /// store (one process does everything) and off for MongoDB (run `beacon-worker`).
    pub run_worker: bool,
    /// The worker's and the store's settings.
    pub worker: WorkerConfig,
}

impl Config {
    /// Reads `HOST`, `PORT`, `RUN_WORKER` and the worker's variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let worker = WorkerConfig::from_env(env)?;
        let embedded = matches!(worker.store.backend, Backend::Embedded { .. });
        Ok(Self {
            host: env.parse("HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("PORT", 1000)?,
            run_worker: env.flag("RUN_WORKER", embedded)?,
            worker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_runs_the_worker_inside_mongo_does_not() {
        let c = Config::from_env(&Env::default()).unwrap();
        assert!(c.run_worker);
        assert_eq!(c.port, 1000);
        let c = Config::from_env(&Env::from_pairs([("MONGO_URL", "mongodb://h/db")])).unwrap();
        assert!(!c.run_worker);
    }

    #[test]
    fn bad_port_names_the_variable() {
        let err = Config::from_env(&Env::from_pairs([("PORT", "70000")])).unwrap_err();
        assert_eq!(err.var, "PORT");
    }
}
