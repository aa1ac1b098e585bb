use anyhow::Context;
use beacon_config::{WorkerConfig, process};
use beacon_store::Store;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::load().unwrap_or_else(|e| e.exit());
    process::init_tracing(config.observe.log_format);
    let store = Store::open(config.store.clone())
        .await
        .context("cannot open the store")?;
    beacon_telemetry::install();
    if let Some(port) = config.observe.metrics_port {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("cannot listen on METRICS_PORT={port}"))?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let router = beacon_telemetry::router(
            store.clone(),
            config.observe.metrics_token.clone(),
            config.store.write_timeout,
        );
        // Ends with the process.
        tokio::spawn(beacon_telemetry::serve(
            listener,
            router,
            std::future::pending(),
        ));
    }
    beacon_worker::run(config, store, process::shutdown_signal()).await;
    Ok(())
}
