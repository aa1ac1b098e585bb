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
    beacon_worker::run(config, store, process::shutdown_signal()).await;
    Ok(())
}
