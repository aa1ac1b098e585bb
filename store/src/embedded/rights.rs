//! Data rights: erasing one user's events, deleting raw events past the retention
//! window, and forgetting old cookieless salts.
//!
//! Erasure deletes the queue's rows before `events`' rows. A move copies rows from the
//! queue inside its transaction, on the same writer as the second delete, so a move
//! either ran before that delete (which then removes what it copied) or finds the
//! queue's rows gone already: nothing of the user survives.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::EmbeddedStore;
use super::codec::parse_id;
use super::events::{SITE, forget_server_timed};
use super::open::shrink;
use super::queue::count_queued;
use crate::{Result, millis};

impl EmbeddedStore {
    /// Deletes `user_id`'s events of `site_id`, queued and stored, and their visit
    /// state; answers how many events.
    pub(crate) async fn erase_user(&self, site_id: &str, user_id: &str) -> Result<u64> {
        let (site, user) = (site_id.to_owned(), user_id.to_owned());
        // The queue is bounded by backpressure, so the ids of its rows fit in memory.
        let queued: Vec<(String, i64, i64)> = self
            .queue_writer
            .run(move |file| {
                let tx = file.conn.transaction()?;
                let ids = tx
                    .prepare(&format!(
                        "DELETE FROM \"{}\" WHERE site_id = ?1 AND user_id = ?2
                         RETURNING event_id, timestamp, ingested_at",
                        file.queue
                    ))?
                    .query_map(params![site, user], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                count_queued(&tx, &file.queue, -(ids.len() as i64))?;
                tx.commit()?;
                Ok(ids)
            })
            .await?;
        let (site, user) = (site_id.to_owned(), user_id.to_owned());
        let queued_count = queued.len() as u64;
        let stored = self
            .writer
            .run(move |file| {
                file.visits.forget(&(site.clone(), user.clone()));
                let tx = file.conn.transaction()?;
                // A moved event stays queued until its batch is finished: count it once.
                let mut both = 0;
                {
                    let mut stored = tx.prepare_cached(&format!(
                        "SELECT 1 FROM events WHERE site = {SITE} AND time = ?2 AND id = ?3"
                    ))?;
                    // A resend of an event the server timed has a time of its own.
                    let mut server_timed =
                        tx.prepare_cached("SELECT 1 FROM server_timed WHERE id = ?1")?;
                    for (id, time, ingested) in &queued {
                        let id = parse_id(id)?;
                        let id = id.as_bytes();
                        let found = stored.exists(params![site, time, id])?
                            || (time == ingested && server_timed.exists([id])?);
                        both += u64::from(found);
                    }
                }
                let deleted = tx
                    .prepare(&format!(
                        "DELETE FROM events WHERE site = {SITE} AND user_id = ?2
                         RETURNING id, ingested"
                    ))?
                    .query_map(params![site, user], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                forget_server_timed(&tx, &deleted)?;
                let n = deleted.len() as u64;
                tx.execute(
                    "DELETE FROM visits WHERE site_id = ?1 AND user_id = ?2",
                    params![site, user],
                )?;
                tx.commit()?;
                Ok(n.saturating_sub(both))
            })
            .await?;
        Ok(queued_count + stored)
    }

    /// Deletes up to `limit` raw events older than `before`, site by site; answers how
    /// many. Small batches, so that moves waiting on the same writer never stall.
    pub(crate) async fn expire_events(&self, before: DateTime<Utc>, limit: usize) -> Result<u64> {
        self.write(move |conn, _| {
            let sites: Vec<String> = conn
                .prepare_cached("SELECT DISTINCT site_id FROM rollups WHERE granularity = 'd'")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut deleted = 0;
            let mut delete = conn.prepare_cached(&format!(
                "DELETE FROM events WHERE (site, time, id) IN (SELECT site, time, id
                 FROM events WHERE site = {SITE} AND time < ?2 LIMIT ?3)
                 RETURNING id, ingested"
            ))?;
            for site in sites {
                let left = limit - deleted;
                if left == 0 {
                    break;
                }
                let gone = delete
                    .query_map(params![site, millis(before), left as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                forget_server_timed(conn, &gone)?;
                deleted += gone.len();
            }
            drop(delete);
            shrink(conn)?;
            Ok(deleted as u64)
        })
        .await
    }

    /// Deletes the visit states of visitors not seen since `before` (epoch ms).
    pub(crate) async fn forget_visits(&self, before: i64) -> Result<u64> {
        self.writer
            .run(move |file| {
                file.visits.clear();
                let forgotten = file
                    .conn
                    .execute("DELETE FROM visits WHERE last < ?1", [before])?;
                shrink(&file.conn)?;
                Ok(forgotten as u64)
            })
            .await
    }

    /// Deletes the cookieless salts of days before `oldest_kept` (`YYYY-MM-DD`).
    pub(crate) async fn forget_salts(&self, oldest_kept: &str) -> Result<()> {
        let oldest_kept = oldest_kept.to_owned();
        self.write(move |conn, _| {
            conn.execute("DELETE FROM salts WHERE day < ?1", [oldest_kept])?;
            Ok(())
        })
        .await
    }
}
