//! Visitors' visit states (see `rollup::visits`), read and written inside the move's
//! transaction: the single writer makes each move see the states the last one left.
//!
//! The writer also keeps the states it last committed in memory ([`Cache`]), since the
//! next moves mostly follow the same visitors: reading a state back from its table cost
//! as much as the rest of following its events. Whatever else changes the table on this
//! writer (an erasure, forgetting old states) tells the cache.

use rusqlite::{OptionalExtension, Transaction, params};

use super::bounded::Bounded;
use crate::Result;
use crate::rollup::visits::{States, VisitState, Visitor};

/// The bytes of states kept in memory (a state can be 8 KB).
const CACHED_BYTES: usize = 4 << 20;

/// The visit states as last committed, of the visitors of recent moves.
#[derive(Debug)]
pub(crate) struct Cache(Bounded<Visitor, VisitState>);

impl Default for Cache {
    fn default() -> Self {
        Self(Bounded::new(CACHED_BYTES))
    }
}

impl Cache {
    /// After a commit that saved `visitors`' states from `states` (see [`save`]).
    pub(super) fn committed(&mut self, visitors: &[Visitor], states: &States) {
        for visitor in visitors {
            let Some(state) = states.get(visitor) else {
                continue;
            };
            let size = size_of(visitor, state);
            self.0.insert(visitor.clone(), state.clone(), size);
        }
    }

    /// Before `visitor`'s state is deleted.
    pub(crate) fn forget(&mut self, visitor: &Visitor) {
        self.0.remove(visitor);
    }

    /// Before states are deleted in bulk.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// About what a state costs in memory: its texts and its counted keys.
fn size_of(visitor: &Visitor, state: &VisitState) -> usize {
    64 + visitor.0.len() + visitor.1.len() + 8 * (state.attrs.len() + state.seen.len())
}

/// The states of `visitors` that exist.
pub(super) fn load(tx: &Transaction<'_>, cache: &Cache, visitors: &[Visitor]) -> Result<States> {
    let mut stmt =
        tx.prepare_cached("SELECT state FROM visits WHERE site_id = ?1 AND user_id = ?2")?;
    let mut states = States::with_capacity(visitors.len());
    for visitor in visitors {
        if let Some(state) = cache.0.get(visitor) {
            states.insert(visitor.clone(), state.clone());
            continue;
        }
        let bytes: Option<Vec<u8>> = stmt
            .query_row(params![visitor.0, visitor.1], |r| r.get(0))
            .optional()?;
        if let Some(bytes) = bytes {
            states.insert(visitor.clone(), VisitState::from_bytes(&bytes)?);
        }
    }
    Ok(states)
}

/// Writes the states of `visitors` from `states`.
pub(super) fn save(tx: &Transaction<'_>, visitors: &[Visitor], states: &States) -> Result<()> {
    // An upsert changes the row in place; `OR REPLACE` would delete it and insert it
    // again, both in the table and in `visits_last`.
    let mut stmt = tx.prepare_cached(
        "INSERT INTO visits (site_id, user_id, state, last) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (site_id, user_id) DO UPDATE SET state = excluded.state, last = excluded.last",
    )?;
    for visitor in visitors {
        if let Some(state) = states.get(visitor) {
            stmt.execute(params![visitor.0, visitor.1, state.to_bytes(), state.last])?;
        }
    }
    Ok(())
}
