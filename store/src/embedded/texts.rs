//! The ids of `texts`, the dictionary of `events`' repeating texts (see `events`), as
//! `beacon.db`'s writer knows them: most lookups cost no query.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use super::bounded::Bounded;

/// The bytes of texts whose ids are kept in memory (a context can be 4 KB).
const CACHED_BYTES: usize = 4 << 20;

/// The ids of texts, as the writer thread knows them.
#[derive(Debug)]
pub(crate) struct Texts {
    /// Committed ids.
    cache: Bounded<String, i64>,
    /// Ids read or added since the last commit, which a rollback may undo.
    pending: HashMap<String, i64, ahash::RandomState>,
}

impl Default for Texts {
    fn default() -> Self {
        Self {
            cache: Bounded::new(CACHED_BYTES),
            pending: HashMap::default(),
        }
    }
}

impl Texts {
    /// The id of `text`, added to `texts` if new.
    pub(super) fn id(&mut self, conn: &Connection, text: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.cache.get(text).or_else(|| self.pending.get(text)) {
            return Ok(*id);
        }
        let found = conn
            .prepare_cached("SELECT id FROM texts WHERE value = ?1")?
            .query_row([text], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO texts (value) VALUES (?1)")?
                    .execute([text])?;
                conn.last_insert_rowid()
            }
        };
        self.pending.insert(text.to_owned(), id);
        Ok(id)
    }

    /// Before a transaction: nothing is pending (a failed one may have left some).
    pub(crate) fn begin(&mut self) {
        self.pending.clear();
    }

    /// After a commit: what was pending is now known for good.
    pub(crate) fn committed(&mut self) {
        for (text, id) in self.pending.drain() {
            let size = text.len();
            self.cache.insert(text, id, size);
        }
    }

    /// After a rollback (of a transaction or a savepoint): what was added may be gone.
    pub(crate) fn rolled_back(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::events::SCHEMA;

    /// An id added in a savepoint that rolls back is gone: the cache must not keep it.
    #[test]
    fn texts_forget_the_ids_a_rollback_undid() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut texts = Texts::default();
        texts.begin();
        let mut tx = conn.transaction().unwrap();
        {
            let attempt = tx.savepoint().unwrap();
            assert_eq!(texts.id(&attempt, "a").unwrap(), 1);
        }
        texts.rolled_back();
        assert_eq!(texts.id(&tx, "b").unwrap(), 1);
        tx.commit().unwrap();
        texts.committed();
        texts.begin();
        assert_eq!(texts.id(&conn, "b").unwrap(), 1);
        assert_eq!(texts.id(&conn, "a").unwrap(), 2);
    }

    /// The cache holds at most [`CACHED_BYTES`] of texts, however many differ.
    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut texts = Texts::default();
        let long = "x".repeat(4000);
        for i in 0..3000 {
            texts.begin();
            texts.id(&conn, &format!("{long}{i}")).unwrap();
            texts.committed();
            assert!(texts.cache.bytes() <= CACHED_BYTES);
        }
        assert!(texts.cache.len() < 3000);
    }
}
