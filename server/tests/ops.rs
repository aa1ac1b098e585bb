//! What operators rely on: binaries that explain themselves, logs for shippers, health
//! for orchestrators, Prometheus metrics and the API's description.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_binary_lists_every_setting_and_its_version() {
    let bin = env!("CARGO_BIN_EXE_beacon-server");
    let settings = [
        "PORT",
        "MONGO_URL",
        "ADMIN_TOKEN",
        "TRUST_PROXY",
        "LOG_FORMAT",
        "METRICS_PORT",
        "METRICS_TOKEN",
        "BATCH_SIZE",
        "QUEUE_MAX_EVENTS",
    ];
    beacon_testkit::assert_explains_itself(bin, &settings);
}

/// With `LOG_FORMAT=json`, every line the server logs is one JSON object.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_beacon-server"))
        .env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DATA_DIR", data.path())
        .env("LOG_FORMAT", "json")
        .current_dir(data.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let object: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                object["timestamp"].is_string() && object["level"].is_string(),
                "{line}"
            );
            let listening = object["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Beacon listening on"));
            seen.push(object);
            if listening {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no listening line in {seen:?}");
    server.kill().await.unwrap();
}
