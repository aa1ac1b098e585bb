//! Sites and their read keys, in `beacon.db`.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::{ApiKey, Result, Site, StoreError, from_millis, millis};

const SITE_COLUMNS: &str = "site_id, domains, timezone, created_at";
const KEY_COLUMNS: &str = "key_id, site_id, hash, created_at, last_used_at";

impl EmbeddedStore {
    /// Registers `site`; false if its id is taken.
    pub(crate) async fn create_site(&self, site: &Site) -> Result<bool> {
        let site = site.clone();
        self.write(move |conn, _| {
            let domains = domains_json(&site.domains)?;
            Ok(conn.execute(
                &format!("INSERT OR IGNORE INTO sites ({SITE_COLUMNS}) VALUES (?1, ?2, ?3, ?4)"),
                params![
                    site.site_id,
                    domains,
                    site.timezone,
                    millis(site.created_at)
                ],
            )? == 1)
        })
        .await
    }

    /// Every registered site, by id.
    pub(crate) async fn sites(&self) -> Result<Vec<Site>> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SITE_COLUMNS} FROM sites ORDER BY site_id"
            ))?;
            let rows = stmt.query_map([], |r| Ok(read_site(r)))?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    /// The ids of sites with processed events, in order, at most `limit`: a skip scan of
    /// the rollups' key, one index seek per site rather than a read of every row.
    pub(crate) async fn sites_with_events(&self, limit: usize) -> Result<Vec<String>> {
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "WITH RECURSIVE s(id) AS (
                     SELECT MIN(site_id) FROM rollups
                     UNION ALL
                     SELECT (SELECT MIN(site_id) FROM rollups WHERE site_id > s.id)
                     FROM s WHERE s.id IS NOT NULL
                 )
                 SELECT id FROM s WHERE id IS NOT NULL LIMIT ?1",
            )?;
            let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    /// One site, if registered.
    pub(crate) async fn site(&self, site_id: &str) -> Result<Option<Site>> {
        let site_id = site_id.to_owned();
        self.read(move |conn, _| {
            conn.prepare_cached(&format!(
                "SELECT {SITE_COLUMNS} FROM sites WHERE site_id = ?1"
            ))?
            .query_row([site_id], |r| Ok(read_site(r)))
            .optional()?
            .transpose()
        })
        .await
    }

    /// Replaces a registered site's domains and time zone; false if it is not registered.
    pub(crate) async fn update_site(&self, site: &Site) -> Result<bool> {
        let site = site.clone();
        self.write(move |conn, _| {
            let domains = domains_json(&site.domains)?;
            Ok(conn.execute(
                "UPDATE sites SET domains = ?2, timezone = ?3 WHERE site_id = ?1",
                params![site.site_id, domains, site.timezone],
            )? == 1)
        })
        .await
    }

    /// Unregisters a site and revokes its keys; its events stay. False if it was not
    /// registered.
    pub(crate) async fn delete_site(&self, site_id: &str) -> Result<bool> {
        let site_id = site_id.to_owned();
        self.write(move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM api_keys WHERE site_id = ?1", [&site_id])?;
            let deleted = tx.execute("DELETE FROM sites WHERE site_id = ?1", [&site_id])?;
            tx.commit()?;
            Ok(deleted == 1)
        })
        .await
    }

    pub(crate) async fn create_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.write(move |conn, _| {
            conn.execute(
                &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, NULL)"),
                params![key.key_id, key.site_id, key.hash, millis(key.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    /// A site's keys, oldest first.
    pub(crate) async fn keys(&self, site_id: &str) -> Result<Vec<ApiKey>> {
        let site_id = site_id.to_owned();
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE site_id = ?1 ORDER BY created_at, key_id"
            ))?;
            let rows = stmt.query_map([site_id], |r| Ok(read_key(r)))?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    /// A key by its id.
    pub(crate) async fn key(&self, key_id: &str) -> Result<Option<ApiKey>> {
        let key_id = key_id.to_owned();
        self.read(move |conn, _| {
            conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"
            ))?
            .query_row([key_id], |r| Ok(read_key(r)))
            .optional()?
            .transpose()
        })
        .await
    }

    /// Deletes a site's key; false if it had no such key.
    pub(crate) async fn revoke_key(&self, site_id: &str, key_id: &str) -> Result<bool> {
        let (site_id, key_id) = (site_id.to_owned(), key_id.to_owned());
        self.write(move |conn, _| {
            Ok(conn.execute(
                "DELETE FROM api_keys WHERE site_id = ?1 AND key_id = ?2",
                params![site_id, key_id],
            )? == 1)
        })
        .await
    }

    /// Records that a key was used at `at`.
    pub(crate) async fn touch_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<()> {
        let key_id = key_id.to_owned();
        self.write(move |conn, _| {
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1",
                params![key_id, millis(at)],
            )?;
            Ok(())
        })
        .await
    }
}

fn domains_json(domains: &[String]) -> Result<String> {
    serde_json::to_string(domains).map_err(|e| StoreError::Corrupt(format!("domains: {e}")))
}

fn read_site(r: &Row<'_>) -> Result<Site> {
    let domains: String = r.get(1)?;
    Ok(Site {
        site_id: r.get(0)?,
        domains: serde_json::from_str(&domains)
            .map_err(|e| StoreError::Corrupt(format!("domains: {e}")))?,
        timezone: r.get(2)?,
        created_at: from_millis(r.get(3)?)?,
    })
}

fn read_key(r: &Row<'_>) -> Result<ApiKey> {
    Ok(ApiKey {
        key_id: r.get(0)?,
        site_id: r.get(1)?,
        hash: r.get(2)?,
        created_at: from_millis(r.get(3)?)?,
        last_used_at: r.get::<_, Option<i64>>(4)?.map(from_millis).transpose()?,
    })
}
