//! Secrets shared by every process: the cookieless daily salts and the install's secret.
//! The first stored under a key wins.

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use mongodb::options::ReturnDocument;

use super::MongoStore;
use super::codec::{binary, is_duplicate_key};
use crate::{Result, StoreError};

impl MongoStore {
    pub(crate) async fn daily_salt(
        &self,
        day: &str,
        oldest_kept: &str,
        fresh: [u8; 32],
    ) -> Result<Vec<u8>> {
        self.check_ready()?;
        let bytes = first_stored(&self.salts, day, "salt", fresh.to_vec()).await?;
        self.salts
            .delete_many(doc! { "_id": { "$lt": oldest_kept } })
            .await?;
        Ok(bytes)
    }
}

/// The bytes stored in `field` of the document `id`, storing `fresh` there if there is
/// none yet. Two processes may do this at once: the loser sees a duplicate key and reads
/// the winner's.
pub(super) async fn first_stored(
    collection: &Collection<Document>,
    id: &str,
    field: &str,
    fresh: Vec<u8>,
) -> Result<Vec<u8>> {
    let fresh = binary(fresh);
    let upsert = || {
        collection
            .find_one_and_update(
                doc! { "_id": id },
                doc! { "$setOnInsert": { field: fresh.clone() } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
    };
    let stored = match upsert().await {
        Err(e) if is_duplicate_key(&e) => upsert().await?,
        other => other?,
    };
    stored
        .as_ref()
        .and_then(|d| d.get_binary_generic(field).ok())
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("{id} in {} is missing", collection.name())))
}
