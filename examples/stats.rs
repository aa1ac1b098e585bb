//! Prints a site's stats from a running Beacon server.
//!
//! ```text
//! cargo run --example stats -- [BASE_URL] [SITE_ID]
//! ```
//! Defaults: `http://localhost:1000` (or `$BEACON_URL`) and `site-001`.

mod common;

#[tokio::main]
async fn main() -> Result<(), beacon::Error> {
    let (base, site) = common::target();

    let client = beacon::Client::builder(&base).site_id(&site).build()?;
    let stats = client.stats(&beacon::StatsQuery::new(&site)).await?;
    println!(
        "site {site}: {} events, {} unique users",
        stats.total_events, stats.unique_users
    );
    for row in &stats.top_paths {
        println!("  {:>8}  {}", row.count, row.path);
    }
    Ok(())
}
