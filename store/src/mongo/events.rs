//! How `events` stores an event on MongoDB, smallest first: disk is what a self-hosted
//! install pays for every month (the embedded store's `events` does the same).
//!
//! - The id (and the batch that stored it) as 16 bytes, not 36 characters of text.
//! - One-letter field names ([`SITE`], [`TIME`]…): a name is stored in every document.
//! - The context's fields as one JSON array, kept once in `values` (the rollups' values
//!   dictionary, keyed by the text's hash) and referenced by its id; inline, as the
//!   array itself, when another text holds that id.
//!
//! Documents of the first layout (text ids, long names, the context's fields each on
//! its own) are rewritten once, at start-up ([`MongoStore::rewrite_first_layout`]).

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime as BsonDateTime, Document, doc};
use uuid::Uuid;

use super::MongoStore;
use super::codec::{DUPLICATE_KEY, bson_id, from_doc, refused_documents};
use crate::rollup::hash::Keys;
use crate::{Context, QueuedEvent, Result, StoreError, from_millis, millis};

/// The event's id: [`uuid`].
pub(super) const ID: &str = "_id";
/// The site.
pub(super) const SITE: &str = "s";
/// When it happened.
pub(super) const TIME: &str = "t";
/// The event type.
pub(super) const TYPE: &str = "e";
/// The path, if any.
pub(super) const PATH: &str = "p";
/// The user, if any.
pub(super) const USER: &str = "u";
/// When the server accepted it.
pub(super) const INGESTED: &str = "i";
/// When a worker moved it.
pub(super) const MOVED: &str = "m";
/// The batch that moved it: [`uuid`] of its label.
pub(super) const BATCH: &str = "b";
/// Props, as JSON text.
pub(super) const PROPS: &str = "x";
/// The context: a value id, or the array of its fields.
pub(super) const CONTEXT: &str = "c";

/// A UUID (an event's id, a batch's label) as stored: 16 bytes.
pub(super) fn uuid(id: &Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.as_bytes().to_vec(),
    })
}

/// The UUID stored by [`uuid`].
pub(super) fn uuid_of(stored: Option<&Bson>) -> Option<Uuid> {
    match stored {
        Some(Bson::Binary(b)) => Uuid::from_slice(&b.bytes).ok(),
        _ => None,
    }
}

/// A batch's label as stored: [`uuid`] when it is one (labels are), else the text.
pub(super) fn batch_label(label: &str) -> Bson {
    Uuid::parse_str(label).map_or_else(|_| Bson::from(label), |id| uuid(&id))
}

/// The context's fields as the JSON array kept in `values`, and its id there; none
/// for an empty context.
pub(super) fn context_text(keys: &Keys, context: &Context) -> Option<(u64, String)> {
    let values = context.values();
    if values.iter().all(Option::is_none) {
        return None;
    }
    // An array of strings and nulls always serialises.
    let text = serde_json::to_string(&values).unwrap_or_default();
    Some((keys.value(&text), text))
}

/// The document of `e`, moved by `batch` at `moved`; `collided` holds the context ids
/// that another text took in `values`.
pub(super) fn to_event_doc(
    keys: &Keys,
    e: &QueuedEvent,
    batch: &Bson,
    moved: BsonDateTime,
    collided: &HashSet<u64>,
) -> Document {
    let mut d = doc! {
        ID: uuid(&e.event_id),
        SITE: &e.site_id,
        TIME: BsonDateTime::from_millis(millis(e.timestamp)),
        TYPE: &e.event_type,
        INGESTED: BsonDateTime::from_millis(millis(e.ingested_at)),
        MOVED: moved,
        BATCH: batch.clone(),
    };
    if let Some(path) = &e.path {
        d.insert(PATH, path);
    }
    if let Some(user) = &e.user_id {
        d.insert(USER, user);
    }
    if let Some((id, _)) = context_text(keys, &e.context) {
        if collided.contains(&id) {
            let values = e.context.values().map(|v| v.map_or(Bson::Null, Bson::from));
            d.insert(CONTEXT, values.to_vec());
        } else {
            d.insert(CONTEXT, bson_id(id));
        }
    }
    if let Some(props) = &e.props {
        // As JSON text, not a BSON document (see `codec::to_queue_doc`).
        if let Ok(text) = serde_json::to_string(props) {
            d.insert(PROPS, text);
        }
    }
    d
}

/// Decodes documents of `events`, looking up the contexts they reference in `values`.
pub(super) async fn read_events(store: &MongoStore, docs: &[Document]) -> Result<Vec<QueuedEvent>> {
    let ids: HashSet<u64> = docs.iter().filter_map(context_id).collect();
    let texts = if ids.is_empty() {
        HashMap::new()
    } else {
        store
            .value_texts(&ids.into_iter().collect::<Vec<_>>())
            .await?
    };
    let mut contexts: HashMap<u64, Context> = HashMap::new();
    for (id, text) in texts {
        contexts.insert(id, context_of(&text)?);
    }
    docs.iter().map(|d| from_event_doc(d, &contexts)).collect()
}

fn context_id(d: &Document) -> Option<u64> {
    d.get_i64(CONTEXT)
        .ok()
        .map(|id| u64::from_le_bytes(id.to_le_bytes()))
}

fn context_of(text: &str) -> Result<Context> {
    let mut values: Vec<Option<String>> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("context {text}: {e}")))?;
    values.resize(Context::FIELDS.len(), None);
    Ok(Context::from_values(|i| values[i].take()))
}

fn from_event_doc(d: &Document, contexts: &HashMap<u64, Context>) -> Result<QueuedEvent> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("event document lacks {what}: {d}"));
    let opt_str = |k: &str| d.get_str(k).ok().map(str::to_owned);
    let time = |k: &str| {
        d.get_datetime(k)
            .map_err(|_| corrupt(k))
            .and_then(|t| from_millis(t.timestamp_millis()))
    };
    let context = match d.get(CONTEXT) {
        None => Context::default(),
        Some(Bson::Array(values)) => {
            let mut values: Vec<Option<String>> = values
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect();
            values.resize(Context::FIELDS.len(), None);
            Context::from_values(|i| values[i].take())
        }
        Some(_) => context_id(d)
            .and_then(|id| contexts.get(&id).cloned())
            .ok_or_else(|| corrupt("a known context"))?,
    };
    Ok(QueuedEvent {
        event_id: uuid_of(d.get(ID)).ok_or_else(|| corrupt(ID))?,
        site_id: opt_str(SITE).ok_or_else(|| corrupt(SITE))?,
        event_type: opt_str(TYPE).ok_or_else(|| corrupt(TYPE))?,
        path: opt_str(PATH),
        user_id: opt_str(USER),
        timestamp: time(TIME)?,
        ingested_at: time(INGESTED)?,
        props: d
            .get_str(PROPS)
            .ok()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(&format!("props as JSON ({e})")))?,
        context,
        continues: None,
    })
}

/// Logs a document of the first layout that cannot be rewritten: it stays as it is, and
/// the start goes on, as one bad document must not keep every process from serving.
fn left_as_it_is(old: &Document, error: &str) {
    tracing::error!(id = ?old.get(ID), error, "an event of the first layout could not be rewritten: left as it is");
}

/// How many documents of the first layout one step of the rewrite takes.
const REWRITE_STEP: usize = 1000;

impl MongoStore {
    /// Rewrites `events` documents of the first layout into this one, a step at a time:
    /// each step inserts the new documents, then deletes the old ones. A crash between
    /// leaves both, and the next start inserts nothing new and deletes the old ones; two
    /// processes rewriting at once do the same. A document that cannot be read or is
    /// refused stays as it is, logged. Answers how many it rewrote.
    pub(super) async fn rewrite_first_layout(&self, keys: &Keys) -> Result<u64> {
        let old_layout = doc! { "site_id": { "$exists": true } };
        let mut cursor = self.events.find(old_layout).await?;
        let mut rewritten = 0;
        loop {
            let mut step = Vec::with_capacity(REWRITE_STEP);
            while step.len() < REWRITE_STEP {
                match cursor.try_next().await? {
                    Some(d) => step.push(d),
                    None => break,
                }
            }
            if step.is_empty() {
                break;
            }
            if rewritten == 0 {
                tracing::info!("rewriting events into the compact layout: once, at start-up");
            }
            let mut docs = Vec::with_capacity(step.len());
            let mut contexts = HashMap::new();
            for old in &step {
                match from_doc(old) {
                    Ok(e) => {
                        contexts.extend(context_text(keys, &e.context));
                        docs.push((e, old));
                    }
                    Err(err) => left_as_it_is(old, &err.to_string()),
                }
            }
            let collided = self.record_values(&contexts).await?;
            let new: Vec<Document> = docs
                .iter()
                .map(|(e, old)| {
                    let batch = old.get_str("batch").map_or(Bson::Null, batch_label);
                    let moved = old
                        .get_datetime("processed_at")
                        .copied()
                        .unwrap_or_else(|_| BsonDateTime::now());
                    to_event_doc(keys, e, &batch, moved, &collided)
                })
                .collect();
            let mut refused = HashSet::new();
            if let Err(e) = self.events.insert_many(new).ordered(false).await {
                // A duplicate was inserted by an earlier start, or by another process
                // rewriting too; anything else is refused by the database.
                for (i, code, message) in refused_documents(e)? {
                    if code != DUPLICATE_KEY {
                        if let Some((_, old)) = docs.get(i) {
                            left_as_it_is(old, &message);
                        }
                        refused.insert(i);
                    }
                }
            }
            let ids: Vec<Bson> = docs
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains(i))
                .filter_map(|(_, (_, old))| old.get(ID).cloned())
                .collect();
            rewritten += ids.len() as u64;
            self.events.delete_many(doc! { ID: { "$in": ids } }).await?;
        }
        if rewritten > 0 {
            tracing::info!(events = rewritten, "events rewritten");
        }
        Ok(rewritten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::hash::SECRET_BYTES;

    /// A context is referenced by its id, or kept inline when another text took that
    /// id in `values`: either way it reads back as sent.
    #[test]
    fn contexts_read_back_whether_referenced_or_inline() {
        let keys = Keys::from_secret(&[3; SECRET_BYTES]);
        let at = crate::from_millis(1_764_072_000_123).unwrap();
        let e = QueuedEvent {
            event_id: Uuid::now_v7(),
            site_id: "s".into(),
            event_type: "page_view".into(),
            path: Some("/".into()),
            user_id: Some("u".into()),
            timestamp: at,
            ingested_at: at,
            props: None,
            context: Context {
                source: Some("Google".into()),
                country: Some("".into()),
                ..Context::default()
            },
            continues: None,
        };
        let (id, text) = context_text(&keys, &e.context).unwrap();
        let contexts = HashMap::from([(id, context_of(&text).unwrap())]);
        let batch = batch_label(&Uuid::now_v7().to_string());
        let moved = BsonDateTime::now();

        let referenced = to_event_doc(&keys, &e, &batch, moved, &HashSet::new());
        assert_eq!(referenced.get(CONTEXT), Some(&bson_id(id)));
        assert_eq!(from_event_doc(&referenced, &contexts).unwrap(), e);

        let inline = to_event_doc(&keys, &e, &batch, moved, &HashSet::from([id]));
        assert!(matches!(inline.get(CONTEXT), Some(Bson::Array(_))));
        assert_eq!(from_event_doc(&inline, &HashMap::new()).unwrap(), e);
    }
}
