use std::net::SocketAddr;

use anyhow::Context;
use beacon_config::{ServerConfig, process};
use tokio::net::TcpListener;

/// Request handling allocates many small, short-lived buffers; mimalloc serves them
/// faster than the system allocator under concurrency.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ServerConfig::load().unwrap_or_else(|e| e.exit());
    process::init_tracing(config.worker.observe.log_format);
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, &e))?;
    beacon_server::run(config, listener, process::shutdown_signal())
        .await
        .context("server failed")
}

fn bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "ports below 1024 need root; set PORT to a higher port, for example PORT=8080"
        }
        std::io::ErrorKind::AddrInUse => {
            "another program is using it; set PORT to a free port, for example PORT=8080"
        }
        _ => "set PORT (and HOST) to an address this machine can listen on",
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}; {hint}")
}
