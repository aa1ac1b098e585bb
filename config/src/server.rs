//! `beacon-server`'s settings.

use std::net::IpAddr;
use std::path::PathBuf;

use beacon_store::Backend;
use clap::Parser;
use clap::builder::BoolishValueParser;

use crate::limits::{LimitArgs, Limits};
use crate::observe::ObserveArgs;
use crate::store::StoreArgs;
use crate::worker::{PollingArgs, WorkerConfig};
use crate::{Args, ConfigError};

/// Everything `beacon-server` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `HOST`: the address to listen on.
    pub host: IpAddr,
    /// `PORT`: the HTTP port.
    pub port: u16,
    /// `RUN_WORKER`: run the worker inside the server. On by default for the embedded
    /// store (one process does everything), off for MongoDB (run `beacon-worker`).
    pub run_worker: bool,
    /// `SDK_DIR`: the browser SDK's built files, served under `/sdk/`.
    pub sdk_dir: PathBuf,
    /// `TRUST_PROXY`: take the client's IP from the last `X-Forwarded-For` address.
    pub trust_proxy: bool,
    /// Timeouts, connections, the queue's high-water mark, rate limits.
    pub limits: Limits,
    /// `ADMIN_TOKEN`: with it, reads need a key and the admin API is open to this
    /// token; without it, stats are readable by anyone.
    pub admin_token: Option<String>,
    /// `STRICT_SITES`: refuse events for site ids that are not registered.
    pub strict_sites: bool,
    /// `GEOIP_DB`: a MaxMind-format country database; without it countries are unknown.
    pub geoip_db: Option<PathBuf>,
    /// `BOT_FILTER`: leave bots' events out.
    pub bot_filter: bool,
    /// The worker's settings (for the worker inside), the store's, and the log format
    /// and metrics (`worker.observe`: the process has one of each).
    pub worker: WorkerConfig,
}

/// Beacon's API server: takes events over HTTP, queues them durably, and answers stats.
/// Every setting is a flag or an environment variable (also read from .env).
#[derive(Debug, Clone, Parser)]
#[command(name = "beacon-server", version, about, long_about = None)]
struct ServerArgs {
    /// The address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: IpAddr,
    /// The HTTP port. Ports below 1024 need root.
    #[arg(long, env = "PORT", default_value_t = 1000)]
    port: u16,
    /// Run the worker inside the server [default: true without MONGO_URL, false with it].
    #[arg(long, env = "RUN_WORKER", value_parser = BoolishValueParser::new())]
    run_worker: Option<bool>,
    /// The browser SDK's files (scripts/build-wasm writes them), served under /sdk/.
    /// A relative path is from the working directory.
    #[arg(long, env = "SDK_DIR", default_value = "sdk-wasm/pkg")]
    sdk_dir: PathBuf,
    /// Take the client's address (for cookieless ids and rate limits) from the last
    /// X-Forwarded-For entry, the one your reverse proxy appended. Turn it on only behind
    /// such a proxy; otherwise clients could forge it.
    #[arg(long, env = "TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    trust_proxy: bool,
    #[command(flatten)]
    limits: LimitArgs,
    /// The admin API's token. Set, every read (stats, queries) needs it or a site's read
    /// key; unset, stats are readable by anyone and the admin API is off. At least 16
    /// characters.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Refuse events for site ids that are not registered (POST /api/sites).
    #[arg(long, env = "STRICT_SITES", default_value_t = false, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    strict_sites: bool,
    /// A MaxMind-format country database (GeoLite2-Country.mmdb, say): visitors'
    /// countries come from their IP addresses, which are never stored. Unset: countries
    /// are unknown.
    #[arg(long, env = "GEOIP_DB")]
    geoip_db: Option<PathBuf>,
    /// Leave out crawlers, headless browsers and known bots (counted in /health).
    #[arg(long, env = "BOT_FILTER", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    bot_filter: bool,
    #[command(flatten)]
    polling: PollingArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    observe: ObserveArgs,
}

/// The admin token, if set and not blank. Checked here rather than by clap, whose
/// message would show the value.
fn admin_token(token: Option<&str>) -> Result<Option<String>, clap::Error> {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) if t.len() >= 16 => Ok(Some(t.to_owned())),
        Some(_) => Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            "invalid value for '--admin-token <ADMIN_TOKEN>': use at least 16 characters\n",
        )),
    }
}

impl ServerConfig {
    /// Reads `.env`, the environment and the command line.
    pub fn load() -> Result<Self, ConfigError> {
        ServerArgs::load()
    }

    /// Every setting at its default, whatever the environment says: what tests and
    /// embedders start from.
    pub fn defaults() -> Self {
        ServerArgs::defaults()
    }
}

impl Args for ServerArgs {
    type Config = ServerConfig;
    const NAME: &'static str = "beacon-server";

    fn resolve(&self) -> Result<ServerConfig, clap::Error> {
        let store = self.store.store_config()?;
        let embedded = matches!(store.backend, Backend::Embedded { .. });
        Ok(ServerConfig {
            host: self.host,
            port: self.port,
            run_worker: self.run_worker.unwrap_or(embedded),
            sdk_dir: self.sdk_dir.clone(),
            trust_proxy: self.trust_proxy,
            limits: self.limits.resolve()?,
            admin_token: admin_token(self.admin_token.as_deref())?,
            strict_sites: self.strict_sites,
            // Blank, as in a .env template, is unset.
            geoip_db: self.geoip_db.clone().filter(|p| !p.as_os_str().is_empty()),
            bot_filter: self.bot_filter,
            worker: self.polling.resolve(store, self.observe.resolve()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerConfig, clap::Error> {
        ServerArgs::without_env(args)
    }

    #[test]
    fn embedded_runs_the_worker_inside_mongo_does_not() {
        let c = ServerConfig::defaults();
        assert!(c.run_worker);
        assert_eq!(c.port, 1000);
        let c = parse(&["--mongo-url", "mongodb://h/db"]).unwrap();
        assert!(!c.run_worker);
        let c = parse(&["--mongo-url", "mongodb://h/db", "--run-worker", "yes"]).unwrap();
        assert!(c.run_worker);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PORT", "70000"),
            ("HOST", "localhost:80"),
            ("RUN_WORKER", "maybe"),
            ("MAX_CONNECTIONS", "0"),
            ("REQUEST_TIMEOUT_MS", "9000"),
        ] {
            let flag = format!("--{}={value}", var.to_lowercase().replace('_', "-"));
            let err = parse(&[&flag]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_mongo_url_error_does_not_show_the_password() {
        let err = parse(&["--mongo-url", "postgres://user:secret@h/db"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MONGO_URL") && !err.contains("secret"),
            "{err}"
        );
    }
}
