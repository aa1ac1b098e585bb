//! The cookieless daily salts, shared by every server: the first stored for a day wins.

use mongodb::bson::doc;
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
        let salt = binary(fresh.to_vec());
        let upsert = || {
            self.salts
                .find_one_and_update(
                    doc! { "_id": day },
                    doc! { "$setOnInsert": { "salt": salt.clone() } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
        };
        // Two servers may upsert the same new day at once; the loser sees a duplicate key
        // and reads the winner's salt.
        let stored = match upsert().await {
            Err(e) if is_duplicate_key(&e) => upsert().await?,
            other => other?,
        };
        let bytes = stored
            .as_ref()
            .and_then(|d| d.get_binary_generic("salt").ok())
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("salt for {day} is missing")))?;
        self.salts
            .delete_many(doc! { "_id": { "$lt": oldest_kept } })
            .await?;
        Ok(bytes)
    }
}
