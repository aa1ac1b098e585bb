use anyhow::Context;
use beacon_store::Store;
use beacon_worker::{Env, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::load()?;
    beacon_worker::init_tracing();
    let config = WorkerConfig::from_env(&env)?;
    let store = Store::open(config.store.clone())
        .await
        .context("cannot open the store")?;
    beacon_worker::run(config, store, beacon_worker::shutdown_signal()).await;
    Ok(())
}
