//! Visitors' visit states (see `rollup::visits`) in `visit_states`, one document per
//! site and user: the state, the batch that last saved it (`batch`), and while a move
//! works on it, the batch holding it (`lock`) and until when (`until`).
//!
//! A move locks all its visitors' states before it reads them, and saves them (which
//! unlocks them) after its buckets have the batch. A lock whose time ran out can be
//! taken only once its batch is gone: while the batch waits for another worker to take
//! it over, its lock stays, so that no other batch reads a state the batch may still
//! change. A move that cannot lock every state lets go of those it did lock, so two
//! moves never wait on each other.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::MongoStore;
use super::codec::{binary, only_duplicate_keys};
use crate::rollup::visits::{States, VisitState, Visitor};
use crate::{Result, StoreError};

/// Most state updates in one command.
const SAVES_AT_ONCE: usize = 1000;
/// Most bytes of states in one command, well under MongoDB's 16 MB.
const SAVE_BYTES: usize = 4 * 1024 * 1024;

/// The states a move holds.
#[derive(Debug, Default)]
pub(super) struct Locked {
    /// The states that exist, by visitor.
    pub(super) states: States,
    /// Visitors whose state this batch saved already (an earlier attempt got that far).
    pub(super) done: HashSet<Visitor>,
}

/// A visitor's document id: unambiguous whatever the site and user hold.
fn state_id((site, user): &Visitor) -> String {
    format!("{}:{site}|{user}", site.len())
}

impl MongoStore {
    /// Locks the states of `visitors` for `batch` for `lease`. `None` when another live
    /// batch holds one of them; then nothing stays locked.
    pub(super) async fn lock_visitors(
        &self,
        visitors: &[Visitor],
        batch: &str,
        lease: Duration,
    ) -> Result<Option<Locked>> {
        if visitors.is_empty() {
            return Ok(Some(Locked::default()));
        }
        let ids: Vec<String> = visitors.iter().map(state_id).collect();
        let until = BsonDateTime::from_millis(
            BsonDateTime::now().timestamp_millis() + lease.as_millis() as i64,
        );
        let free = doc! { "$or": [{ "lock": { "$exists": false } }, { "lock": batch }] };
        self.visit_states
            .update_many(
                doc! { "_id": { "$in": &ids }, "$and": [free] },
                doc! { "$set": { "lock": batch, "until": until } },
            )
            .await?;
        let mut found = self.state_docs(&ids).await?;
        let missing: Vec<Document> = visitors
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !found.contains_key(*id))
            .map(|((site, user), id)| {
                doc! { "_id": id, "site_id": site, "user_id": user, "lock": batch, "until": until }
            })
            .collect();
        if !missing.is_empty() {
            match self.visit_states.insert_many(missing).ordered(false).await {
                Ok(_) => {}
                Err(e) if only_duplicate_keys(&e) => {} // another move made it: read below
                Err(e) => return Err(e.into()),
            }
            found = self.state_docs(&ids).await?;
        }
        if self.take_abandoned(&found, batch, until).await? {
            found = self.state_docs(&ids).await?;
        }
        if found.len() < ids.len() || found.values().any(|d| d.get_str("lock") != Ok(batch)) {
            self.release_visitors(&ids, batch).await?;
            return Ok(None);
        }
        let mut locked = Locked::default();
        for (visitor, id) in visitors.iter().zip(&ids) {
            let Some(d) = found.get(id) else { continue };
            if d.get_str("batch") == Ok(batch) {
                locked.done.insert(visitor.clone());
            }
            if let Ok(bytes) = d.get_binary_generic("s") {
                locked
                    .states
                    .insert(visitor.clone(), VisitState::from_bytes(bytes)?);
            }
        }
        Ok(Some(locked))
    }

    /// Takes the locks among `found` whose time ran out and whose batch is gone; true if
    /// there were any.
    async fn take_abandoned(
        &self,
        found: &HashMap<String, Document>,
        batch: &str,
        until: BsonDateTime,
    ) -> Result<bool> {
        let now = BsonDateTime::now();
        let expired: Vec<(&String, &str)> = found
            .iter()
            .filter_map(|(id, d)| {
                let holder = d.get_str("lock").ok()?;
                let ran_out = d.get_datetime("until").is_ok_and(|t| *t < now);
                (holder != batch && ran_out).then_some((id, holder))
            })
            .collect();
        if expired.is_empty() {
            return Ok(false);
        }
        let holders: Vec<&str> = expired.iter().map(|(_, h)| *h).collect();
        let live: HashSet<String> = self
            .batch_ids(doc! { "_id": { "$in": &holders } })
            .await?
            .into_iter()
            .collect();
        for (id, holder) in expired {
            if !live.contains(holder) {
                self.visit_states
                    .update_one(
                        doc! { "_id": id, "lock": holder },
                        doc! { "$set": { "lock": batch, "until": until } },
                    )
                    .await?;
            }
        }
        Ok(true)
    }

    async fn state_docs(&self, ids: &[String]) -> Result<HashMap<String, Document>> {
        Ok(self
            .visit_states
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), d)))
            .collect())
    }

    /// Saves the states of `visitors`, marked with `batch`, and unlocks them; then
    /// unlocks whatever else `batch` holds among `all`.
    pub(super) async fn save_visitors(
        &self,
        visitors: &[Visitor],
        states: &States,
        all: &[Visitor],
        batch: &str,
    ) -> Result<()> {
        // One `update` command with a statement per state, in pieces of bounded size:
        // a round trip per piece rather than per visitor.
        let mut pending: Vec<Document> = Vec::new();
        let mut bytes = 0;
        for visitor in visitors {
            let Some(state) = states.get(visitor) else {
                continue;
            };
            let s = state.to_bytes();
            bytes += s.len() + 128;
            pending.push(doc! {
                "q": { "_id": state_id(visitor), "lock": batch },
                "u": {
                    "$set": { "s": binary(s), "last": state.last, "batch": batch },
                    "$unset": { "lock": "", "until": "" },
                },
            });
            if pending.len() == SAVES_AT_ONCE || bytes > SAVE_BYTES {
                self.update_states(std::mem::take(&mut pending), batch)
                    .await?;
                bytes = 0;
            }
        }
        if !pending.is_empty() {
            self.update_states(pending, batch).await?;
        }
        let ids: Vec<String> = all.iter().map(state_id).collect();
        self.release_visitors(&ids, batch).await
    }

    /// Runs `updates` (statements of an `update` command) on `visit_states`.
    async fn update_states(&self, updates: Vec<Document>, batch: &str) -> Result<()> {
        let wanted = updates.len() as i64;
        let db = self
            .visit_states
            .client()
            .database(&self.visit_states.namespace().db);
        let answer = db
            .run_command(doc! {
                "update": self.visit_states.name(),
                "updates": updates,
                "ordered": false,
            })
            .await?;
        if let Ok(errors) = answer.get_array("writeErrors") {
            if let Some(first) = errors.first() {
                return Err(StoreError::Unavailable(format!(
                    "saving visit states failed: {first}"
                )));
            }
        }
        let matched = answer
            .get_i32("n")
            .map(i64::from)
            .or_else(|_| answer.get_i64("n"))
            .unwrap_or(wanted);
        if matched < wanted {
            tracing::warn!(
                batch,
                "a visit state was taken from this batch before it saved it"
            );
        }
        Ok(())
    }

    async fn release_visitors(&self, ids: &[String], batch: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.visit_states
            .update_many(
                doc! { "_id": { "$in": ids }, "lock": batch },
                doc! { "$unset": { "lock": Bson::String(String::new()), "until": "" } },
            )
            .await?;
        Ok(())
    }
}
