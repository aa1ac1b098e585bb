//! The cookieless daily salts: the first stored for a day wins.

use rusqlite::params;

use super::EmbeddedStore;
use crate::Result;

impl EmbeddedStore {
    pub(crate) async fn daily_salt(
        &self,
        day: &str,
        oldest_kept: &str,
        fresh: [u8; 32],
    ) -> Result<Vec<u8>> {
        let (day, oldest_kept) = (day.to_owned(), oldest_kept.to_owned());
        self.write(move |conn, _| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO salts (day, salt) VALUES (?1, ?2) ON CONFLICT(day) DO NOTHING",
                params![day, fresh.to_vec()],
            )?;
            let salt: Vec<u8> =
                tx.query_row("SELECT salt FROM salts WHERE day = ?1", [&day], |r| {
                    r.get(0)
                })?;
            tx.execute("DELETE FROM salts WHERE day < ?1", [&oldest_kept])?;
            tx.commit()?;
            Ok(salt)
        })
        .await
    }
}
