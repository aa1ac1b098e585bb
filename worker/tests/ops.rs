//! What operators rely on in the worker binary: it explains itself and serves metrics.
#![allow(clippy::unwrap_used)]

#[test]
fn the_binary_lists_every_setting_and_its_version() {
    let settings = [
        "MONGO_URL",
        "BATCH_SIZE",
        "POLL_MS",
        "RETENTION_DAYS",
        "LOG_FORMAT",
        "METRICS_PORT",
        "METRICS_TOKEN",
    ];
    beacon_testkit::assert_explains_itself(env!("CARGO_BIN_EXE_beacon-worker"), &settings);
}

/// `beacon-worker` serves its own `/metrics` on `METRICS_PORT`.
#[tokio::test]
async fn the_worker_serves_metrics_on_its_port() {
    let data = tempfile::tempdir().unwrap();
    let port = beacon_testkit::free_port();
    let _worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_beacon-worker"))
        .env_clear()
        .env("DATA_DIR", data.path())
        .env("METRICS_PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .current_dir(data.path())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        if let Ok(r) = reqwest::get(&url).await {
            break r.text().await.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(text.contains("beacon_queue_depth 0"), "{text}");
}
