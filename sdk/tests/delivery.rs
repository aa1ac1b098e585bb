//! The SDK against the real server and worker: everything tracked arrives exactly once,
//! even when the server restarts in the middle.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use beacon_store::StoreConfig;
use beacon_testkit::TestBackend;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Server {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), beacon_server::ServerError>>,
}

async fn start_server(store: &StoreConfig, addr: SocketAddr) -> (Server, SocketAddr) {
    let mut config = beacon_testkit::server_config(store.clone());
    config.worker.batch_size = 200;
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(beacon_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    (Server { stop, handle }, addr)
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }
}

async fn wait_for_total(client: &beacon::Client, site: &str, total: u64) -> beacon::Stats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = client.stats(&beacon::StatsQuery::new(site)).await;
        if let Ok(stats) = &stats {
            if stats.total_events >= total {
                assert_eq!(stats.total_events, total);
                return stats.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck at {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client(addr: SocketAddr, site: &str) -> beacon::Client {
    beacon::Client::builder(format!("http://{addr}"))
        .site_id(site)
        .batch_size(50)
        .flush_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .max_retries(100)
        .build()
        .unwrap()
}

#[tokio::test]
async fn tracked_events_arrive_exactly_once_and_stats_read_them() {
    for b in TestBackend::all() {
        let (server, addr) = start_server(&b.config, "127.0.0.1:0".parse().unwrap()).await;
        let client = client(addr, "sdk-site");
        for i in 0..600 {
            if i % 3 == 0 {
                client.click(format!("/p{}", i % 4), "cta");
            } else {
                client.track(
                    beacon::event("page_view")
                        .path(format!("/p{}", i % 4))
                        .user(format!("u{}", i % 9)),
                );
            }
        }
        client.flush().await;
        let stats = wait_for_total(&client, "sdk-site", 600).await;
        // Clicks (every third event) are anonymous, so user ids i % 9 with i % 3 != 0 remain.
        assert_eq!(stats.unique_users, 6, "{}", b.name);
        assert_eq!(stats.top_paths.len(), 4);
        assert_eq!(client.metrics().delivered, 600);
        assert_eq!(client.dropped(), 0);
        let mut q = beacon::StatsQuery::new("sdk-site");
        q.event_type = Some("click".into());
        // On MongoDB each bucket is a document of its own, written one after another:
        // the bucket of all types can be read before the clicks' has its last batch.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let clicks = loop {
            let clicks = client.stats(&q).await.unwrap().total_events;
            if clicks >= 200 || tokio::time::Instant::now() >= deadline {
                break clicks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(clicks, 200, "{}", b.name);
        let err = client
            .stats(&beacon::StatsQuery::new(""))
            .await
            .unwrap_err();
        assert!(
            matches!(err, beacon::Error::Api { ref code, .. } if code == "invalid_query"),
            "{err}"
        );
        client.shutdown().await;
        server.stop().await;
    }
}

#[tokio::test]
async fn a_server_restart_in_the_middle_loses_and_doubles_nothing() {
    for b in TestBackend::all() {
        let (server, addr) = start_server(&b.config, "127.0.0.1:0".parse().unwrap()).await;
        let client = client(addr, "restart-site");
        for i in 0..300 {
            client.page_view(format!("/{i}"));
        }
        client.flush().await;
        server.stop().await;
        // The server is gone: these wait in the buffer while the sender retries.
        for i in 300..600 {
            client.page_view(format!("/{i}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (server, _) = start_server(&b.config, addr).await;
        client.flush().await;
        wait_for_total(&client, "restart-site", 600).await;
        assert_eq!(client.dropped(), 0, "{}", b.name);
        client.shutdown().await;
        server.stop().await;
    }
}

/// The client sends to an `https://` server (here a TLS proxy in front of Beacon, with a
/// certificate the test trusts), and reads stats over it.
#[tokio::test]
async fn events_arrive_over_https() {
    let backend = TestBackend::embedded();
    let (server, addr) = start_server(&backend.config, "127.0.0.1:0".parse().unwrap()).await;
    let tls = beacon_testkit::TlsProxy::start(addr).await;
    let client = beacon::Client::builder(format!("https://localhost:{}", tls.addr().port()))
        .site_id("tls")
        .root_certificate(tls.certificate())
        .flush_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    for i in 0..20 {
        client.page_view(format!("/{i}"));
    }
    client.flush().await;
    assert_eq!(client.metrics().delivered, 20);
    let stats = wait_for_total(&client, "tls", 20).await;
    assert_eq!(stats.total_events, 20);
    client.shutdown().await;
    server.stop().await;
}
