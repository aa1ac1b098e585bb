//! Data rights: erasing one user's events, deleting raw events past the retention
//! window, and forgetting old cookieless salts.
//!
//! A worker moves a batch from the events it claimed, in memory, so deleting a user's
//! queued and stored events could miss a batch being moved at that moment. So erasure
//! also records the user in `erasures`: a move drops the events of an erased user that
//! arrived before the erasure, and once every lease that could hold such an event has
//! run out, the worker deletes the user's events once more and forgets the record.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use uuid::Uuid;

use super::codec::bson_time;
use super::queue::{events_in, holding, pull_events};
use super::{MongoStore, events};
use crate::{QueuedEvent, Result};

/// An erasure of a site's user: events of theirs accepted until `at` are dropped.
#[derive(Debug, Clone)]
pub(super) struct Erasure {
    site_id: String,
    user_id: String,
    at: DateTime<Utc>,
}

impl Erasure {
    /// Whether `event` was erased.
    pub(super) fn covers(&self, event: &QueuedEvent) -> bool {
        event.site_id == self.site_id
            && event.user_id.as_deref() == Some(self.user_id.as_str())
            && event.ingested_at <= self.at
    }
}

impl MongoStore {
    /// Deletes `user_id`'s events of `site_id`, queued and stored, and their visit
    /// state; answers how many events.
    pub(crate) async fn erase_user(&self, site_id: &str, user_id: &str) -> Result<u64> {
        self.check_ready()?;
        self.erasures
            .update_one(
                doc! { "_id": { "site": site_id, "user": user_id } },
                doc! { "$set": {
                    "site_id": site_id, "user_id": user_id, "at": BsonDateTime::now(),
                } },
            )
            .upsert(true)
            .await?;
        let filter = doc! { "site_id": site_id, "user_id": user_id };
        // A moved event stays queued until its batch is finished: count it with the
        // stored ones, not twice. The queue is bounded by backpressure, so the user's
        // queued ids fit in memory.
        let docs: Vec<Document> = self
            .queue
            .find(holding(&filter))
            .await?
            .try_collect()
            .await?;
        let mut queued = HashSet::new();
        for d in &docs {
            queued.extend(
                events_in(d)?
                    .into_iter()
                    .filter(|e| {
                        e.get_str("site_id") == Ok(site_id) && e.get_str("user_id") == Ok(user_id)
                    })
                    .filter_map(|e| Uuid::parse_str(e.get_str("_id").ok()?).ok()),
            );
        }
        let mut erased = 0;
        let queued: Vec<Uuid> = queued.into_iter().collect();
        for chunk in queued.chunks(1000) {
            let as_stored: Vec<Bson> = chunk.iter().map(events::uuid).collect();
            let stored = ids(&self.events, doc! { events::ID: { "$in": as_stored } })
                .await?
                .len();
            erased += (chunk.len() - stored.min(chunk.len())) as u64;
        }
        // Those queued since the ids were read go too, uncounted.
        pull_events(&self.queue, &filter).await?;
        let stored = self
            .events
            .delete_many(doc! { events::SITE: site_id, events::USER: user_id })
            .await?
            .deleted_count;
        self.visit_states.delete_many(filter).await?;
        Ok(erased + stored)
    }

    /// The erasures in force.
    pub(super) async fn erasures(&self) -> Result<Vec<Erasure>> {
        let docs: Vec<Document> = self.erasures.find(doc! {}).await?.try_collect().await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                Some(Erasure {
                    site_id: d.get_str("site_id").ok()?.to_owned(),
                    user_id: d.get_str("user_id").ok()?.to_owned(),
                    at: crate::from_millis(d.get_datetime("at").ok()?.timestamp_millis()).ok()?,
                })
            })
            .collect())
    }

    /// Finishes erasures older than two leases: deletes what a move in flight may have
    /// stored meanwhile, then the record.
    pub(crate) async fn settle_erasures(&self) -> Result<()> {
        self.check_ready()?;
        let settled = Utc::now()
            - chrono::Duration::from_std(self.claim_lease * 2)
                .unwrap_or_else(|_| chrono::Duration::zero());
        for erasure in self.erasures().await? {
            if erasure.at > settled {
                continue;
            }
            self.events
                .delete_many(doc! {
                    events::SITE: &erasure.site_id,
                    events::USER: &erasure.user_id,
                    events::INGESTED: { "$lte": bson_time(erasure.at) },
                })
                .await?;
            self.erasures
                .delete_one(doc! {
                    "_id": { "site": &erasure.site_id, "user": &erasure.user_id },
                    "at": bson_time(erasure.at),
                })
                .await?;
        }
        Ok(())
    }

    /// Deletes up to `limit` raw events older than `before`, site by site; answers how
    /// many.
    pub(crate) async fn expire_events(&self, before: DateTime<Utc>, limit: usize) -> Result<u64> {
        self.check_ready()?;
        let sites = self
            .rollups
            .distinct("site_id", doc! { "granularity": "d" })
            .await?;
        let mut deleted = 0;
        for site in sites.iter().filter_map(|s| s.as_str()) {
            let left = limit as u64 - deleted;
            if left == 0 {
                break;
            }
            let ids: Vec<mongodb::bson::Bson> = self
                .events
                .find(doc! { events::SITE: site, events::TIME: { "$lt": bson_time(before) } })
                .projection(doc! { events::ID: 1 })
                .limit(i64::try_from(left).unwrap_or(i64::MAX))
                .await?
                .try_collect::<Vec<Document>>()
                .await?
                .into_iter()
                .filter_map(|d| d.get("_id").cloned())
                .collect();
            if !ids.is_empty() {
                deleted += self
                    .events
                    .delete_many(doc! { "_id": { "$in": ids } })
                    .await?
                    .deleted_count;
            }
        }
        Ok(deleted)
    }

    /// Deletes the visit states of visitors not seen since `before` (epoch ms), but for
    /// those a move holds.
    pub(crate) async fn forget_visits(&self, before: i64) -> Result<u64> {
        self.check_ready()?;
        let old = BsonDateTime::from_millis(before);
        Ok(self
            .visit_states
            .delete_many(doc! {
                "$and": [
                    { "$or": [{ "last": { "$lt": before } }, { "last": { "$exists": false } }] },
                    { "$or": [{ "lock": { "$exists": false } }, { "until": { "$lt": old } }] },
                ],
            })
            .await?
            .deleted_count)
    }

    /// Deletes the cookieless salts of days before `oldest_kept` (`YYYY-MM-DD`).
    pub(crate) async fn forget_salts(&self, oldest_kept: &str) -> Result<()> {
        self.check_ready()?;
        self.salts
            .delete_many(doc! { "_id": { "$lt": oldest_kept } })
            .await?;
        Ok(())
    }
}

/// The `_id`s of the documents of `collection` that `filter` matches.
async fn ids(collection: &mongodb::Collection<Document>, filter: Document) -> Result<Vec<Bson>> {
    Ok(collection
        .find(filter)
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|d| d.get("_id").cloned())
        .collect())
}
