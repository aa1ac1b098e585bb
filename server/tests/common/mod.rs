//! Starts the real server on 127.0.0.1:0 for a test, on a backend from the testkit.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use beacon_protocol::Stats;
use beacon_server::ServerConfig;
use beacon_store::StoreConfig;
use beacon_testkit::TestBackend;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer` with `get`, when set (servers with ADMIN_TOKEN).
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), beacon_server::ServerError>>>,
}

pub fn config(store: StoreConfig, run_worker: bool) -> ServerConfig {
    let mut config = beacon_testkit::server_config(store);
    config.run_worker = run_worker;
    config
}

impl TestApp {
    /// The server with the worker inside, as a single-process deployment runs it.
    pub async fn start(backend: &TestBackend) -> Self {
        let app = Self::start_with(config(backend.config.clone(), true)).await;
        app.wait_healthy().await;
        app
    }

    /// Waits until `/health` answers 200: the store is reachable and its indexes exist.
    pub async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.get("/health").await.0 != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let listener = TcpListener::bind(SocketAddr::new(config.host, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(beacon_server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        Self {
            base: format!("http://{addr}"),
            http,
            token: None,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Graceful shutdown, waiting for the server (and its worker) to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let token = self.token.clone();
        self.send(reqwest::Method::GET, path_and_query, token.as_deref(), None)
            .await
    }

    /// Any request, with `token` as its bearer and `body` as JSON.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn stats(&self, query: &str) -> Stats {
        let (status, body) = self.get(&format!("/stats?{query}")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Polls `/stats` until `total_events` reaches `total`, or panics after 20 s.
    pub async fn wait_for_total(&self, query: &str, total: u64) -> Stats {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = self.stats(query).await;
            if stats.total_events >= total || tokio::time::Instant::now() > deadline {
                assert_eq!(stats.total_events, total, "stats for {query}");
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `/metrics` as series (name and labels, as printed) to values.
pub async fn scrape(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> std::collections::HashMap<String, f64> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

impl TestApp {
    /// One series of this server's `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let all = scrape(&self.http, &self.url("/metrics"), None).await;
        all.get(series).copied().unwrap_or(0.0)
    }
}

/// The real `beacon-server` binary on 127.0.0.1:`port`, with its data in `data` and
/// nothing else from this environment; the caller adds settings and spawns it.
pub fn server_binary(data: &std::path::Path, port: u16) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_beacon-server"));
    command
        .env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DATA_DIR", data)
        .current_dir(data)
        .kill_on_drop(true);
    command
}
