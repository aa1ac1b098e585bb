//! The server's settings, from the environment and `.env` (see `beacon_worker::config`).

use std::net::IpAddr;
use std::path::PathBuf;

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
    /// `SDK_DIR`: the browser SDK's built files (`scripts/build-wasm`), served under
    /// `/sdk/`. Defaults to `sdk-wasm/pkg` in this source tree.
    pub sdk_dir: PathBuf,
    /// `TRUST_PROXY`, default off: take the client's IP from `X-Forwarded-For`, for
    /// cookieless visitors behind a reverse proxy. Off, a client could forge it.
    pub trust_proxy: bool,
    /// The worker's and the store's settings.
    pub worker: WorkerConfig,
}

impl Config {
    /// A server on 127.0.0.1 (port 0: the caller binds) with the worker inside and every
    /// other setting at its default: what tests and embedders start.
    pub fn loopback(worker: WorkerConfig) -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            run_worker: true,
            sdk_dir: default_sdk_dir(),
            trust_proxy: false,
            worker,
        }
    }
}

/// Where `scripts/build-wasm` writes the browser SDK in this source tree.
pub fn default_sdk_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk-wasm/pkg"))
}

impl Config {
    /// Reads `HOST`, `PORT`, `RUN_WORKER`, `SDK_DIR`, `TRUST_PROXY` and the worker's
    /// variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let worker = WorkerConfig::from_env(env)?;
        let embedded = matches!(worker.store.backend, Backend::Embedded { .. });
        Ok(Self {
            host: env.parse("HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("PORT", 1000)?,
            run_worker: env.flag("RUN_WORKER", embedded)?,
            sdk_dir: env
                .get("SDK_DIR")
                .map_or_else(default_sdk_dir, PathBuf::from),
            trust_proxy: env.flag("TRUST_PROXY", false)?,
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
