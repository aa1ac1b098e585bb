//! Reads for `/stats` (the buckets and raw events of each piece of the plan, and the
//! texts of the top values), pages of stored events, and the count of dead letters.

use std::collections::HashMap;

use beacon_protocol::TimeRange;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::codec::{bson_id, bson_time, count_field, from_doc, id_of};
use crate::rollup::plan::{self, Piece};
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::TopK;
use crate::rollup::{PATH, Rollup};
use crate::stats::Part;
use crate::{EventsPage, QueuedEvent, Result};

impl MongoStore {
    /// What each piece of the range's plan holds.
    pub(crate) async fn stats_parts(&self, range: &TimeRange) -> Result<Vec<Part>> {
        let event_type = plan::bucket_type(range);
        let mut parts = Vec::new();
        for piece in plan::plan(range) {
            parts.push(match piece {
                Piece::Buckets {
                    granularity,
                    from,
                    to,
                } => {
                    let mut start = Document::new();
                    if let Some(from) = from {
                        start.insert("$gte", from);
                    }
                    if let Some(to) = to {
                        start.insert("$lt", to);
                    }
                    let mut filter = doc! {
                        "site_id": &range.site_id,
                        "granularity": granularity.code(),
                        "event_type": event_type,
                    };
                    if !start.is_empty() {
                        filter.insert("start", start);
                    }
                    Part::Buckets(self.read_buckets(filter).await?)
                }
                Piece::Raw { from, to } => {
                    let mut filter = doc! {
                        "site_id": &range.site_id,
                        "timestamp": {
                            "$gte": BsonDateTime::from_millis(from),
                            "$lt": BsonDateTime::from_millis(to),
                        },
                    };
                    if !event_type.is_empty() {
                        filter.insert("event_type", event_type);
                    }
                    let rows: Vec<Document> = self
                        .events
                        .find(filter)
                        .projection(doc! { "path": 1, "user_id": 1 })
                        .await?
                        .try_collect()
                        .await?;
                    let opt = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_owned);
                    Part::Raw(
                        rows.iter()
                            .map(|d| (opt(d, "path"), opt(d, "user_id")))
                            .collect(),
                    )
                }
            });
        }
        Ok(parts)
    }

    /// The buckets matching `filter`, merged (with their top paths, the one dimension
    /// `/stats` reads).
    async fn read_buckets(&self, filter: Document) -> Result<Rollup> {
        let mut total = Rollup::default();
        let path_field = format!("dims.{}", PATH.name);
        let mut cursor = self
            .rollups
            .find(filter)
            .projection(doc! { "count": 1, "users": 1, &path_field: 1 })
            .await?;
        let mut paths = TopK::default();
        while let Some(d) = cursor.try_next().await? {
            total.count += count_field(&d, "count");
            let users = d.get_binary_generic("users").map_or(&[][..], Vec::as_slice);
            total.users.merge(&Sketch::from_bytes(users)?);
            let summary = d
                .get_document("dims")
                .ok()
                .and_then(|dims| dims.get_binary_generic(PATH.name).ok());
            if let Some(bytes) = summary {
                paths.merge_unbounded(&TopK::from_bytes(bytes)?);
            }
        }
        total.dims.insert(PATH.name, paths);
        Ok(total)
    }

    /// The texts of value ids, from the dictionary.
    pub(crate) async fn value_texts(&self, ids: &[u64]) -> Result<HashMap<u64, String>> {
        let ids: Vec<Bson> = ids.iter().map(|id| bson_id(*id)).collect();
        let mut texts = HashMap::with_capacity(ids.len());
        let mut cursor = self.values.find(doc! { "_id": { "$in": ids } }).await?;
        while let Some(d) = cursor.try_next().await? {
            if let (Some(id), Ok(text)) = (id_of(&d), d.get_str("v")) {
                texts.insert(id, text.to_owned());
            }
        }
        Ok(texts)
    }

    /// Events the database refused for good.
    pub(crate) async fn dead_letters(&self) -> Result<u64> {
        self.check_ready()?;
        Ok(self.dead_letters.count_documents(doc! {}).await?)
    }

    /// One page of a site's events, by timestamp then id, starting the index range at
    /// the later of `from` and the last event's time.
    pub(crate) async fn events_page(&self, page: &EventsPage) -> Result<Vec<QueuedEvent>> {
        let mut time = Document::new();
        let start = match page.after {
            Some((at, _)) => Some(page.from.map_or(at, |from| from.max(at))),
            None => page.from,
        };
        if let Some(start) = start {
            time.insert("$gte", bson_time(start));
        }
        if let Some(to) = page.to {
            time.insert("$lt", bson_time(to));
        }
        let mut filter = doc! { "site_id": &page.site_id };
        if !time.is_empty() {
            filter.insert("timestamp", time);
        }
        if let Some((at, id)) = page.after {
            filter.insert(
                "$or",
                vec![
                    Bson::Document(doc! { "timestamp": { "$gt": bson_time(at) } }),
                    Bson::Document(doc! { "_id": { "$gt": id.to_string() } }),
                ],
            );
        }
        self.events
            .find(filter)
            .sort(doc! { "timestamp": 1, "_id": 1 })
            .limit(i64::try_from(page.limit).unwrap_or(i64::MAX))
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(from_doc)
            .collect()
    }
}
