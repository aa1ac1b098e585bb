//! Bytes on disk per stored event, all of a store counted: on the embedded store every
//! file in the data directory (events, indexes, rollups, the queue, the WAL after a
//! checkpoint); on
//! MongoDB each collection's `storageSize` plus `totalIndexSize` (`collStats`). The
//! events counted are the rows of `events`.
//!
//! ```text
//! cargo run --release --example storage -- --data-dir beacon-data
//! cargo run --release --example storage -- --mongo-url mongodb://127.0.0.1:27017/beacon
//! ```
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use clap::Parser;
use mongodb::bson::{Document, doc};

#[derive(Debug, Parser)]
struct Args {
    /// The embedded store's data directory.
    #[arg(long, conflicts_with = "mongo_url")]
    data_dir: Option<PathBuf>,
    /// A MongoDB URL with the database Beacon uses.
    #[arg(long)]
    mongo_url: Option<String>,
    /// Print one machine-readable RESULT line at the end.
    #[arg(long)]
    result_line: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (parts, events) = match (&args.data_dir, &args.mongo_url) {
        (Some(dir), None) => embedded(dir),
        (None, Some(url)) => mongo(url).await,
        _ => panic!("give --data-dir or --mongo-url"),
    };
    let total: u64 = parts.iter().map(|(_, bytes)| bytes).sum();
    for (name, bytes) in &parts {
        println!("{name:<28} {bytes:>14} bytes");
    }
    let per_event = if events == 0 {
        0.0
    } else {
        total as f64 / events as f64
    };
    println!(
        "{:<28} {total:>14} bytes for {events} events: {per_event:.1} bytes per event",
        "total"
    );
    if args.result_line {
        println!("RESULT bytes={total} events={events} bytes_per_event={per_event:.1}");
    }
}

/// Every file of the data directory, and the rows of `events`. Each database's WAL is
/// checkpointed first, as the issue counts it: a WAL holds pages on their way into the
/// file, not more data.
fn embedded(dir: &Path) -> (Vec<(String, u64)>, u64) {
    for file in ["beacon.db", "queue.db"] {
        let conn = rusqlite::Connection::open(dir.join(file)).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let mut parts: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, entry.metadata().unwrap().len())
        })
        .collect();
    parts.sort();
    let db = rusqlite::Connection::open_with_flags(
        dir.join("beacon.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let events: i64 = db
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    (parts, events as u64)
}

/// Each collection's storage and index sizes, and the documents of `events`.
async fn mongo(url: &str) -> (Vec<(String, u64)>, u64) {
    let client = mongodb::Client::with_uri_str(url).await.unwrap();
    let db = client
        .default_database()
        .expect("the URL names the database, as MONGO_URL does");
    let mut names = db.list_collection_names().await.unwrap();
    names.sort();
    let mut parts = Vec::new();
    for name in names {
        let stats = db.run_command(doc! { "collStats": &name }).await.unwrap();
        let number = |field: &str| match stats.get(field) {
            Some(mongodb::bson::Bson::Int32(n)) => *n as u64,
            Some(mongodb::bson::Bson::Int64(n)) => *n as u64,
            Some(mongodb::bson::Bson::Double(n)) => *n as u64,
            _ => 0,
        };
        parts.push((format!("{name} (data)"), number("storageSize")));
        parts.push((format!("{name} (indexes)"), number("totalIndexSize")));
    }
    let events = db
        .collection::<Document>("events")
        .estimated_document_count()
        .await
        .unwrap();
    (parts, events)
}
