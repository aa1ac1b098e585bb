//! Each site's event types, for reads by event type (`event:name`).
//!
//! A site's per-type rollup buckets are read with one equality query per type, as every
//! other bucket read is (see `stats::buckets`): a query that leaves the type open, such
//! as `$nin`, is answered from the index by mongod but made secantusd-rs read the whole
//! rollups collection. So the worker records each (site, type) before it adds a batch to
//! that type's buckets, and a read lists the site's types first. Documents are keyed
//! `"{length of site}:{site}|{type}"`, so that a site's types are one `_id` range and no
//! second index is needed.

use std::collections::HashSet;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::MongoStore;
use super::codec::only_duplicate_keys;
use crate::Result;
use crate::rollup::{BucketKey, VISIT_BUCKET};

/// Most (site, type) pairs a process remembers as recorded; cleared when full.
pub(super) const KNOWN_TYPES: usize = 10_000;

/// The `_id` prefix of a site's types.
fn prefix(site_id: &str) -> String {
    format!("{}:{site_id}|", site_id.len())
}

impl MongoStore {
    /// Records the event types of `buckets` that this process has not recorded yet.
    pub(super) async fn record_event_types<'a>(
        &self,
        buckets: impl Iterator<Item = &'a BucketKey>,
    ) -> Result<()> {
        let unknown: HashSet<String> = {
            let known = crate::lock(&self.known_types);
            buckets
                .filter(|key| !key.event_type.is_empty() && key.event_type != VISIT_BUCKET)
                .map(|key| format!("{}{}", prefix(&key.site_id), key.event_type))
                .filter(|id| !known.contains(id))
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let docs: Vec<Document> = unknown.iter().map(|id| doc! { "_id": id }).collect();
        match self.event_types.insert_many(docs).ordered(false).await {
            Ok(_) => {}
            Err(e) if only_duplicate_keys(&e) => {} // recorded before, or by another worker
            Err(e) => return Err(e.into()),
        }
        let mut known = crate::lock(&self.known_types);
        if known.len() + unknown.len() > KNOWN_TYPES {
            known.clear();
        }
        known.extend(unknown);
        Ok(())
    }

    /// The event types a site has had, in order.
    pub(crate) async fn event_types(&self, site_id: &str) -> Result<Vec<String>> {
        let from = prefix(site_id);
        // `|` is followed by `}`: every id of the site sorts below this one.
        let to = format!("{}:{site_id}}}", site_id.len());
        let docs: Vec<Document> = self
            .event_types
            .find(doc! { "_id": { "$gte": &from, "$lt": &to } })
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                d.get_str("_id")
                    .ok()?
                    .strip_prefix(&from)
                    .map(str::to_owned)
            })
            .collect())
    }

    /// Records the types of buckets stored before this collection existed: once, when
    /// it is empty and rollups are not.
    pub(super) async fn backfill_event_types(&self) -> Result<()> {
        if self.event_types.find_one(doc! {}).await?.is_some()
            || self.rollups.find_one(doc! {}).await?.is_none()
        {
            return Ok(());
        }
        let pipeline = [
            doc! { "$match": { "granularity": "d" } },
            doc! { "$group": { "_id": { "site": "$site_id", "type": "$event_type" } } },
        ];
        let groups: Vec<Document> = self
            .rollups
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        let keys: Vec<BucketKey> = groups
            .iter()
            .filter_map(|g| {
                let id = g.get_document("_id").ok()?;
                Some(BucketKey {
                    site_id: id.get_str("site").ok()?.to_owned(),
                    granularity: crate::rollup::Granularity::Day,
                    start: 0,
                    event_type: id.get_str("type").ok()?.to_owned(),
                })
            })
            .collect();
        tracing::info!(
            pairs = keys.len(),
            "recording the event types of stored rollups"
        );
        self.record_event_types(keys.iter()).await
    }
}
