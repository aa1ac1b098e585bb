//! Visitors' visit states (see `rollup::visits`), read and written inside the move's
//! transaction: the single writer makes each move see the states the last one left.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::Result;
use crate::rollup::visits::{States, VisitState, Visitor};

/// The states of `visitors` that exist.
pub(super) fn load(tx: &Transaction<'_>, visitors: &[Visitor]) -> Result<States> {
    let mut stmt =
        tx.prepare_cached("SELECT state FROM visits WHERE site_id = ?1 AND user_id = ?2")?;
    let mut states = States::with_capacity(visitors.len());
    for visitor in visitors {
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
