//! Adding a batch to one rollup bucket: a compare-and-set on the bucket's version that
//! also records the batch in `applied`, so that a batch adds to a bucket at most once.
//!
//! A bucket is one document: its count, its side counters (by `rollup::EXTRA_NAMES`),
//! its users' sketch and, under `dims`, each dimension's top values, all bounded (see `crate::rollup`), so that no bucket can
//! approach MongoDB's 16 MB limit however many distinct values it sees. The worker
//! merges the batch into what it read and writes the result back.

use std::time::Instant;

use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::codec::{binary, count_bson, is_duplicate_key};
use crate::Result;
use crate::rollup::EXTRA_NAMES;
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::TopK;
use crate::rollup::{BucketKey, Rollup};

impl MongoStore {
    /// Adds `delta` to a bucket once per batch: a compare-and-set on the bucket's
    /// version, retried when another worker got there first. False when this worker's
    /// lease ran out while retrying.
    pub(super) async fn add_to_rollup(
        &self,
        key: &BucketKey,
        delta: &Rollup,
        token: &str,
        lease_ends: Instant,
    ) -> Result<bool> {
        let id = key.id();
        loop {
            if Instant::now() >= lease_ends {
                return Ok(false);
            }
            let now = BsonDateTime::now();
            let Some(stored) = self.rollups.find_one(doc! { "_id": &id }).await? else {
                let dims: Document = delta
                    .dims
                    .iter()
                    .map(|(name, top)| ((*name).to_owned(), Bson::from(binary(top.to_bytes()))))
                    .collect();
                let mut new = doc! {
                    "_id": &id,
                    "site_id": &key.site_id,
                    "granularity": key.granularity.code(),
                    "event_type": &key.event_type,
                    "start": key.start,
                    "count": count_bson(delta.count),
                    "dims": dims,
                    "users": binary(delta.users.to_bytes()),
                    "version": 1_i64,
                    "applied": { token: now },
                };
                for (name, x) in EXTRA_NAMES.iter().zip(delta.extra) {
                    new.insert(*name, x);
                }
                if Instant::now() >= lease_ends {
                    return Ok(false);
                }
                match self.rollups.insert_one(new).await {
                    Ok(_) => return Ok(true),
                    Err(e) if is_duplicate_key(&e) => {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let applied = stored.get_document("applied").ok();
            if applied.is_some_and(|a| a.contains_key(token)) {
                return Ok(true);
            }
            let others: Vec<&str> = applied
                .iter()
                .flat_map(|a| a.keys())
                .map(String::as_str)
                .collect();
            let finished = self.finished_among(&others).await?;
            let version = stored.get_i64("version").unwrap_or(0);
            let mut users = Sketch::from_bytes(
                stored
                    .get_binary_generic("users")
                    .map_or(&[][..], Vec::as_slice),
            )?;
            users.merge(&delta.users);
            let mut inc = doc! { "count": count_bson(delta.count), "version": 1_i64 };
            for (name, x) in EXTRA_NAMES.iter().zip(delta.extra) {
                if x != 0 {
                    inc.insert(*name, x);
                }
            }
            let mut set = doc! { "users": binary(users.to_bytes()) };
            let stored_dims = stored.get_document("dims").ok();
            for (name, top) in &delta.dims {
                let mut merged = match stored_dims.and_then(|d| d.get_binary_generic(name).ok()) {
                    Some(bytes) => TopK::from_bytes(bytes)?,
                    None => TopK::default(),
                };
                merged.merge(top);
                set.insert(format!("dims.{name}"), binary(merged.to_bytes()));
            }
            set.insert(format!("applied.{token}"), now);
            let mut update = doc! { "$inc": inc, "$set": set };
            if !finished.is_empty() {
                let unset: Document = finished
                    .iter()
                    .map(|old| (format!("applied.{old}"), Bson::String(String::new())))
                    .collect();
                update.insert("$unset", unset);
            }
            // Sent only under a live lease: a worker that took the batch over since then
            // changes the version before it can finish, so this write cannot land after.
            if Instant::now() >= lease_ends {
                return Ok(false);
            }
            let updated = self
                .rollups
                .update_one(doc! { "_id": &id, "version": version }, update)
                .await?;
            if updated.matched_count == 1 {
                return Ok(true);
            }
        }
    }
}
