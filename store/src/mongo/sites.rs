//! Sites and their read keys, in `sites` and `api_keys`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::MongoStore;
use super::codec::{binary, bson_time, is_duplicate_key};
use crate::{ApiKey, Result, Site, StoreError, from_millis};

impl MongoStore {
    /// Registers `site`; false if its id is taken.
    pub(crate) async fn create_site(&self, site: &Site) -> Result<bool> {
        self.check_ready()?;
        let d = doc! {
            "_id": &site.site_id,
            "domains": &site.domains,
            "timezone": &site.timezone,
            "created_at": bson_time(site.created_at),
        };
        match self.sites.insert_one(d).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered site, by id.
    pub(crate) async fn sites(&self) -> Result<Vec<Site>> {
        self.check_ready()?;
        let docs: Vec<Document> = self
            .sites
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.iter().map(read_site).collect()
    }

    /// The ids of sites with processed events, in order, at most `limit`, read from the
    /// rollups' index (which starts with the site).
    pub(crate) async fn sites_with_events(&self, limit: usize) -> Result<Vec<String>> {
        self.check_ready()?;
        let pipeline = [
            doc! { "$sort": { "site_id": 1 } },
            doc! { "$group": { "_id": "$site_id" } },
            doc! { "$sort": { "_id": 1 } },
            doc! { "$limit": i64::try_from(limit).unwrap_or(i64::MAX) },
        ];
        let docs: Vec<Document> = self
            .rollups
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    /// One site, if registered.
    pub(crate) async fn site(&self, site_id: &str) -> Result<Option<Site>> {
        self.check_ready()?;
        let found = self.sites.find_one(doc! { "_id": site_id }).await?;
        found.as_ref().map(read_site).transpose()
    }

    /// Replaces a registered site's domains and time zone; false if it is not registered.
    pub(crate) async fn update_site(&self, site: &Site) -> Result<bool> {
        self.check_ready()?;
        let updated = self
            .sites
            .update_one(
                doc! { "_id": &site.site_id },
                doc! { "$set": { "domains": &site.domains, "timezone": &site.timezone } },
            )
            .await?;
        Ok(updated.matched_count == 1)
    }

    /// Unregisters a site and revokes its keys (keys first, so that none outlives it);
    /// its events stay. False if it was not registered.
    pub(crate) async fn delete_site(&self, site_id: &str) -> Result<bool> {
        self.check_ready()?;
        self.api_keys
            .delete_many(doc! { "site_id": site_id })
            .await?;
        let deleted = self.sites.delete_one(doc! { "_id": site_id }).await?;
        Ok(deleted.deleted_count == 1)
    }

    pub(crate) async fn create_key(&self, key: &ApiKey) -> Result<()> {
        self.check_ready()?;
        self.api_keys
            .insert_one(doc! {
                "_id": &key.key_id,
                "site_id": &key.site_id,
                "hash": binary(key.hash.clone()),
                "created_at": bson_time(key.created_at),
                "last_used_at": Bson::Null,
            })
            .await?;
        Ok(())
    }

    /// A site's keys, oldest first.
    pub(crate) async fn keys(&self, site_id: &str) -> Result<Vec<ApiKey>> {
        self.check_ready()?;
        let docs: Vec<Document> = self
            .api_keys
            .find(doc! { "site_id": site_id })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.iter().map(read_key).collect()
    }

    /// A key by its id.
    pub(crate) async fn key(&self, key_id: &str) -> Result<Option<ApiKey>> {
        self.check_ready()?;
        let found = self.api_keys.find_one(doc! { "_id": key_id }).await?;
        found.as_ref().map(read_key).transpose()
    }

    /// Deletes a site's key; false if it had no such key.
    pub(crate) async fn revoke_key(&self, site_id: &str, key_id: &str) -> Result<bool> {
        self.check_ready()?;
        let deleted = self
            .api_keys
            .delete_one(doc! { "_id": key_id, "site_id": site_id })
            .await?;
        Ok(deleted.deleted_count == 1)
    }

    /// Records that a key was used at `at`.
    pub(crate) async fn touch_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<()> {
        self.check_ready()?;
        self.api_keys
            .update_one(
                doc! { "_id": key_id },
                doc! { "$set": { "last_used_at": bson_time(at) } },
            )
            .await?;
        Ok(())
    }
}

fn time_of(d: &Document, field: &str) -> Result<Option<DateTime<Utc>>> {
    match d.get(field) {
        Some(Bson::DateTime(t)) => Ok(Some(from_millis(t.timestamp_millis())?)),
        _ => Ok(None),
    }
}

fn read_site(d: &Document) -> Result<Site> {
    let corrupt = || StoreError::Corrupt(format!("malformed site: {d}"));
    Ok(Site {
        site_id: d.get_str("_id").map_err(|_| corrupt())?.to_owned(),
        domains: d
            .get_array("domains")
            .map_err(|_| corrupt())?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        timezone: d.get_str("timezone").map_err(|_| corrupt())?.to_owned(),
        created_at: time_of(d, "created_at")?.ok_or_else(corrupt)?,
    })
}

fn read_key(d: &Document) -> Result<ApiKey> {
    let corrupt = || StoreError::Corrupt(format!("malformed key: {d}"));
    Ok(ApiKey {
        key_id: d.get_str("_id").map_err(|_| corrupt())?.to_owned(),
        site_id: d.get_str("site_id").map_err(|_| corrupt())?.to_owned(),
        hash: d.get_binary_generic("hash").map_err(|_| corrupt())?.clone(),
        created_at: time_of(d, "created_at")?.ok_or_else(corrupt)?,
        last_used_at: time_of(d, "last_used_at")?,
    })
}
