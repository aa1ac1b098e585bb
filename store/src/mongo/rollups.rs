//! Adding a batch to one rollup bucket: a compare-and-set on the bucket's version that
//! also records the batch in `applied`, so that a batch adds to a bucket at most once.

use std::time::Instant;

use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::codec::{binary, count_bson, is_duplicate_key, path_key};
use crate::Result;
use crate::rollup::sketch::Sketch;
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
                let mut paths = Document::new();
                for (path, n) in &delta.paths {
                    paths.insert(path_key(path), count_bson(*n));
                }
                let new = doc! {
                    "_id": &id,
                    "site_id": &key.site_id,
                    "granularity": key.granularity.code(),
                    "event_type": &key.event_type,
                    "start": key.start,
                    "count": count_bson(delta.count),
                    "paths": paths,
                    "users": binary(delta.users.to_bytes()),
                    "version": 1_i64,
                    "applied": { token: now },
                };
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
            for (path, n) in &delta.paths {
                inc.insert(format!("paths.{}", path_key(path)), count_bson(*n));
            }
            let mut set = doc! { "users": binary(users.to_bytes()) };
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
