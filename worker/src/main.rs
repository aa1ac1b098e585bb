use anyhow::Context;
use beacon_config::{WorkerConfig, process};
use beacon_store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::load().unwrap_or_else(|e| e.exit());
    process::init_tracing(config.observe.log_format);
    let store = Store::open(config.store.clone())
        .await
        .context("cannot open the store")?;
    if let Some(port) = config.observe.metrics_port {
        let router = beacon_telemetry::router(
            store.clone(),
            config.observe.metrics_token.clone(),
            config.store.write_timeout,
        );
        // Serves until the process ends.
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        beacon_telemetry::serve(addr, router, std::future::pending())
            .await
            .with_context(|| format!("cannot listen on METRICS_PORT={port}"))?;
    }
    beacon_worker::run(config, store, process::shutdown_signal()).await;
    Ok(())
}
