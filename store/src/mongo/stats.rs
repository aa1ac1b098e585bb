//! Reads for `/stats` (the buckets and raw events of each piece of the plan, and the
//! texts of the top values), pages of stored events, and the count of dead letters.

use std::collections::HashMap;

use beacon_protocol::TimeRange;
use futures::future::try_join_all;
use futures::stream::{BoxStream, TryChunksError};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::codec::{bson_id, bson_time, count_field, id_of};
use super::events;
use crate::rollup::plan::{self, Piece};
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::TopK;
use crate::rollup::{BucketRead, BucketTypes, EXTRA_NAMES, Rollup, StoredBucket, VISIT_BUCKET};
use crate::stats::{Part, merged};
use crate::{EventsPage, QueuedEvent, Result, StoreError};

/// Most event types read one query each; a site with more is read in one query.
const TYPES_ONE_BY_ONE: usize = 64;

impl MongoStore {
    /// What each piece of the range's plan holds, all pieces read at once.
    pub(crate) async fn stats_parts(&self, range: &TimeRange) -> Result<Vec<Part>> {
        try_join_all(
            plan::plan(range)
                .into_iter()
                .map(|piece| self.stats_part(range, piece)),
        )
        .await
    }

    /// What one piece of a range's plan holds.
    async fn stats_part(&self, range: &TimeRange, piece: Piece) -> Result<Part> {
        let event_type = plan::bucket_type(range);
        Ok(match piece {
            Piece::Buckets {
                granularity,
                from,
                to,
            } => {
                let read = BucketRead::for_stats(&range.site_id, granularity, from, to, event_type);
                Part::Buckets(merged(self.buckets(&read).await?))
            }
            Piece::Raw { from, to } => {
                let mut filter = doc! {
                    events::SITE: &range.site_id,
                    events::TIME: {
                        "$gte": BsonDateTime::from_millis(from),
                        "$lt": BsonDateTime::from_millis(to),
                    },
                };
                if !event_type.is_empty() {
                    filter.insert(events::TYPE, event_type);
                }
                let rows: Vec<Document> = self
                    .events
                    .find(filter)
                    .projection(doc! { events::PATH: 1, events::USER: 1 })
                    .await?
                    .try_collect()
                    .await?;
                let opt = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_owned);
                Part::Raw(
                    rows.iter()
                        .map(|d| (opt(d, events::PATH), opt(d, events::USER)))
                        .collect(),
                )
            }
        })
    }

    /// The buckets `read` asks for, each as stored: one query per named type, all at
    /// once. Each query is an equality on every field of the rollups index but the last
    /// and a range on `start`, which every server answers from the index alone; an
    /// `$in` of types made secantusd-rs read the whole collection (BENCHMARKS (8)).
    pub(crate) async fn buckets(&self, read: &BucketRead) -> Result<Vec<StoredBucket>> {
        let types: Vec<Bson> = match &read.types {
            BucketTypes::These(types) => types.iter().map(|t| Bson::from(t.as_str())).collect(),
            BucketTypes::EventTypes => {
                let types = self.event_types(&read.site_id).await?;
                if types.len() <= TYPES_ONE_BY_ONE {
                    types.into_iter().map(Bson::from).collect()
                } else {
                    vec![Bson::Document(doc! { "$nin": ["", VISIT_BUCKET] })]
                }
            }
        };
        let per_type = try_join_all(types.into_iter().map(|t| self.buckets_of(read, t))).await?;
        Ok(per_type.into_iter().flatten().collect())
    }

    /// The buckets of `read` whose `event_type` matches `event_type`.
    async fn buckets_of(&self, read: &BucketRead, event_type: Bson) -> Result<Vec<StoredBucket>> {
        let mut start = Document::new();
        if let Some(from) = read.from {
            start.insert("$gte", from);
        }
        if let Some(to) = read.to {
            start.insert("$lt", to);
        }
        let mut filter = doc! {
            "site_id": &read.site_id,
            "granularity": read.granularity.code(),
            "event_type": event_type,
        };
        if !start.is_empty() {
            filter.insert("start", start);
        }
        let mut projection = doc! { "event_type": 1, "start": 1, "count": 1 };
        for name in EXTRA_NAMES {
            projection.insert(name, 1);
        }
        if read.users {
            projection.insert("users", 1);
        }
        if let Some(dim) = read.dim {
            projection.insert(format!("dims.{dim}"), 1);
        }
        let mut cursor = self.rollups.find(filter).projection(projection).await?;
        let mut buckets = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            let mut rollup = Rollup {
                count: count_field(&d, "count"),
                ..Rollup::default()
            };
            if let Ok(users) = d.get_binary_generic("users") {
                rollup.users = Sketch::from_bytes(users)?;
            }
            for (x, name) in rollup.extra.iter_mut().zip(EXTRA_NAMES) {
                *x = d
                    .get_i64(name)
                    .or_else(|_| d.get_i32(name).map(i64::from))
                    .unwrap_or(0);
            }
            if let Some(dim) = read.dim {
                let summary = d
                    .get_document("dims")
                    .ok()
                    .and_then(|dims| dims.get_binary_generic(dim).ok());
                if let Some(bytes) = summary {
                    rollup.dims.insert(dim, TopK::from_bytes(bytes)?);
                }
            }
            buckets.push(StoredBucket {
                event_type: d.get_str("event_type").unwrap_or_default().to_owned(),
                start: d.get_i64("start").unwrap_or_default(),
                rollup,
            });
        }
        Ok(buckets)
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

    /// One page of a site's events, by timestamp then id (see [`page_filters`]).
    pub(crate) async fn events_page(&self, page: &EventsPage) -> Result<Vec<QueuedEvent>> {
        let Some((ties, later)) = page_filters(page) else {
            return Ok(Vec::new());
        };
        let mut events = match ties {
            Some(ties) => self.events_where(ties, page.limit).await?,
            None => Vec::new(),
        };
        if events.len() < page.limit {
            let left = page.limit - events.len();
            events.extend(self.events_where(later, left).await?);
        }
        Ok(events)
    }

    /// The site's events from `first` on, in pages (see `Store::events`): the two
    /// queries of [`page_filters`], each read to its end by one cursor.
    pub(crate) fn events(&self, first: EventsPage) -> BoxStream<'static, Result<Vec<QueuedEvent>>> {
        let (store, collection) = (self.clone(), self.events.clone());
        let limit = first.limit.max(1);
        let opened = async move {
            let mut parts = Vec::new();
            if let Some((ties, later)) = page_filters(&first) {
                for filter in ties.into_iter().chain([later]) {
                    let cursor = collection.find(filter).sort(order()).await?;
                    parts.push(cursor.map_err(StoreError::from));
                }
            }
            Ok::<_, StoreError>(futures::stream::iter(parts).flatten())
        };
        futures::stream::once(opened)
            .try_flatten()
            .try_chunks(limit)
            .map_err(|TryChunksError(_, e)| e)
            .and_then(move |docs| {
                let store = store.clone();
                async move { events::read_events(&store, &docs).await }
            })
            .boxed()
    }

    /// At most `limit` events matching `filter`, by timestamp then id.
    async fn events_where(&self, filter: Document, limit: usize) -> Result<Vec<QueuedEvent>> {
        let docs: Vec<Document> = self
            .events
            .find(filter)
            .sort(order())
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        events::read_events(self, &docs).await
    }
}

/// Events by timestamp then id: the order of the `(site, time, _id)` index (see `events`).
fn order() -> Document {
    doc! { events::TIME: 1, events::ID: 1 }
}

/// The two queries of a site's events from `page` on, each a range of the
/// `(site, time, _id)` index: after an event, those at its millisecond with a later
/// id; then the later ones (within `from` and `to`). None when nothing can follow. One
/// query with an `$or` of both made secantusd-rs filter the site's events instead.
fn page_filters(page: &EventsPage) -> Option<(Option<Document>, Document)> {
    let (ties, lower) = match (page.after, page.from) {
        (Some((at, _)), _) if page.to.is_some_and(|to| at >= to) => return None,
        (Some((at, id)), from) if from.is_none_or(|from| at >= from) => {
            let ties = doc! {
                events::SITE: &page.site_id,
                events::TIME: bson_time(at),
                events::ID: { "$gt": events::uuid(&id) },
            };
            (Some(ties), Some(("$gt", at)))
        }
        (_, from) => (None, from.map(|from| ("$gte", from))),
    };
    let mut time = Document::new();
    if let Some((op, at)) = lower {
        time.insert(op, bson_time(at));
    }
    if let Some(to) = page.to {
        time.insert("$lt", bson_time(to));
    }
    let mut later = doc! { events::SITE: &page.site_id };
    if !time.is_empty() {
        later.insert(events::TIME, time);
    }
    Some((ties, later))
}
