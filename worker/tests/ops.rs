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
