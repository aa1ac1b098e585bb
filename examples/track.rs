//! Sends page views and clicks to a running Beacon server.
//!
//! ```text
//! cargo run --example track -- [BASE_URL] [SITE_ID]
//! ```
//! Defaults: `http://localhost:1000` (or `$BEACON_URL`) and `site-001`.

use std::time::Duration;

mod common;

#[tokio::main]
async fn main() -> Result<(), beacon::Error> {
    let (base, site) = common::target();

    let client = beacon::Client::builder(&base)
        .site_id(&site)
        .user_id("example-user")
        .build()?;
    let pages = ["/home", "/pricing", "/docs", "/home", "/blog/launch"];
    for (i, page) in pages.iter().enumerate() {
        client.page_view(*page);
        if i % 2 == 0 {
            client.click(*page, "signup-button");
        }
    }
    client.track(beacon::event("signup").path("/welcome").prop("plan", "pro"));
    client.flush().await;
    let m = client.metrics();
    println!(
        "sent {} events to {base} for site {site} ({} dropped)",
        m.delivered,
        client.dropped()
    );
    if m.delivered == 0 {
        eprintln!("nothing was delivered: is the server running at {base}?");
    }
    client.shutdown().await;
    // The worker moves events into stats every POLL_MS; give it a moment before querying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("now try: cargo run --example stats -- {base} {site}");
    Ok(())
}
