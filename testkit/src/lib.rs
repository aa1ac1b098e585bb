//! Test support shared by Beacon's crates: a fresh, isolated database for each test on
//! every backend that this machine can run (this file), a server configuration for
//! tests, helpers that drive a store (`store`), a proxy that injects network faults
//! (`proxy`), one that speaks TLS (`tls`), and headless Chromium (`browser`).
//!
//! MongoDB tests use `MONGO_URL` (as `scripts/test` sets it) with a new database per test.
//! When it is unset they are skipped with a loud line, unless `BEACON_REQUIRE_MONGO=1`
//! (set by `scripts/test`), where a missing MongoDB fails the test instead.

pub mod browser;
mod proxy;
pub mod store;
mod tls;

use std::time::Duration;

use beacon_config::ServerConfig;
use beacon_store::{Backend, StoreConfig};

pub use proxy::FaultyProxy;
pub use store::stored_ids;
pub use tls::TlsProxy;

/// A server on 127.0.0.1 (port 0: the caller binds) on `store`, with the worker inside
/// polling every 20 ms, and every other setting at its default.
pub fn server_config(store: StoreConfig) -> ServerConfig {
    let mut config = ServerConfig::defaults();
    config.host = std::net::IpAddr::from([127, 0, 0, 1]);
    config.port = 0;
    config.run_worker = true;
    config.worker.batch_size = 100;
    config.worker.poll_interval = Duration::from_millis(20);
    config.worker.store = store;
    // Tests poll /stats every few milliseconds; the cases on read limits set their own.
    config.limits.read_rate_limit = None;
    config
}

/// A backend for one test. Keeps its temporary directory alive as long as it lives.
#[derive(Debug)]
pub struct TestBackend {
    /// `embedded` or `mongo`, for assertion messages.
    pub name: &'static str,
    /// The store configuration, pointing at a database no other test uses.
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
}

impl TestBackend {
    /// An embedded store in a new temporary directory.
    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = test_config(Backend::Embedded {
            data_dir: dir.path().to_owned(),
        });
        Self {
            name: "embedded",
            config,
            _dir: Some(dir),
        }
    }

    /// A new database on the test MongoDB, or `None` (with a loud line) if there is none.
    pub fn mongo() -> Option<Self> {
        let url = fresh_mongo_url()?;
        let config = test_config(Backend::Mongo { url });
        Some(Self {
            name: "mongo",
            config,
            _dir: None,
        })
    }

    /// Every backend available here: embedded always, MongoDB when configured.
    pub fn all() -> Vec<Self> {
        let mut all = vec![Self::embedded()];
        all.extend(Self::mongo());
        all
    }

    /// The data directory of an embedded backend.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(tempfile::TempDir::path)
    }
}

/// A store configuration for tests: a short claim lease, so that re-claiming a crashed
/// worker's batch takes a moment rather than the production 30 s.
fn test_config(backend: Backend) -> StoreConfig {
    let mut config = StoreConfig::new(backend);
    config.claim_lease = Duration::from_millis(300);
    config
}

/// The test MongoDB's URL, if any. Panics when `BEACON_REQUIRE_MONGO=1` and none is set.
pub fn mongo_base_url() -> Option<String> {
    let url = std::env::var("MONGO_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        assert!(
            std::env::var("BEACON_REQUIRE_MONGO").as_deref() != Ok("1"),
            "BEACON_REQUIRE_MONGO=1 but MONGO_URL is not set"
        );
        eprintln!("SKIPPED: MongoDB cases, MONGO_URL is not set (scripts/test sets it)");
    }
    url
}

/// A new MongoDB database reached through a [`FaultyProxy`], or `None` without MongoDB.
/// The URL connects directly (no replica-set discovery) so all traffic crosses the proxy.
pub async fn mongo_behind_proxy() -> Option<(TestBackend, FaultyProxy)> {
    let base = mongo_base_url()?;
    let host = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', ',']).next())
        .map(|h| h.rsplit('@').next().unwrap_or(h))
        .expect("MONGO_URL names a host");
    let target = tokio::net::lookup_host(host)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("MONGO_URL host resolves");
    let proxy = FaultyProxy::start(target).await;
    let db = format!("beacon_test_{}", uuid::Uuid::now_v7().simple());
    let url = format!("mongodb://{}/{db}?directConnection=true", proxy.addr());
    let config = test_config(Backend::Mongo { url });
    Some((
        TestBackend {
            name: "mongo-behind-proxy",
            config,
            _dir: None,
        },
        proxy,
    ))
}

/// `MONGO_URL` with its database replaced by a new, unique one.
pub fn fresh_mongo_url() -> Option<String> {
    let base = mongo_base_url()?;
    let db = format!("beacon_test_{}", uuid::Uuid::now_v7().simple());
    Some(with_database(&base, &db))
}

/// Replaces the database (the path) of a MongoDB connection string.
pub fn with_database(url: &str, db: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let hosts_end = main[scheme_end..]
        .find('/')
        .map_or(main.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &main[..hosts_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A port free on 127.0.0.1 a moment ago, for a process the test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Checks that the binary at `bin` lists each of `settings` in `--help` with its
/// environment variable, shows defaults, and prints its version with `--version`.
pub fn assert_explains_itself(bin: &str, settings: &[&str]) {
    let help = std::process::Command::new(bin)
        .arg("--help")
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for setting in settings {
        assert!(
            text.contains(&format!("[env: {setting}")),
            "{bin}: {setting} in\n{text}"
        );
    }
    assert!(text.contains("[default: 1000]"), "defaults shown: {text}");
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.trim().ends_with(env!("CARGO_PKG_VERSION")), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_options_kept() {
        assert_eq!(
            with_database("mongodb://h:1/test_db?w=1", "x"),
            "mongodb://h:1/x?w=1"
        );
        assert_eq!(with_database("mongodb://h:1", "x"), "mongodb://h:1/x");
        assert_eq!(
            with_database("mongodb://u:p@h:1,h2:2/", "x"),
            "mongodb://u:p@h:1,h2:2/x"
        );
    }
}
