//! Cookieless visitors: when a batch says `"cookieless": true`, events without a
//! `user_id` get one derived on the server from a daily salt, the client's IP, its user
//! agent and the site. Nothing is stored on the visitor's device, the same visitor
//! counts once per day and site, and once the salt is deleted (after a day) the id can
//! no longer be linked to the IP.
//!
//! In the first half hour of a day the visitor's id of the day before goes with the
//! event too (`continues`), so that a visit going on across midnight goes on under that
//! id instead of splitting in two (the worker decides, see the store's visits).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::USER_AGENT;
use beacon_store::{Store, StoreError};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::client_ip::client_ip;

/// Derives anonymous daily user ids; caches today's salt.
#[derive(Debug, Clone)]
pub struct Anonymizer {
    store: Store,
    trust_proxy: bool,
    /// The salts of the days asked for lately: today's, and yesterday's at midnight.
    salts: Arc<Mutex<Vec<DaySalt>>>,
}

/// A day and its salt.
type DaySalt = (NaiveDate, Vec<u8>);

/// How long after midnight an event also carries the visitor's id of the day before:
/// the longest gap within a visit.
const CONTINUE_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(30);

/// Who sent a request, as far as the anonymous id needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Its `User-Agent`.
    pub user_agent: String,
}

impl Anonymizer {
    /// `trust_proxy`: take the client's IP from `X-Forwarded-For` (see `client_ip`).
    pub fn new(store: Store, trust_proxy: bool) -> Self {
        Self {
            store,
            trust_proxy,
            salts: Arc::default(),
        }
    }

    /// The client of a request (see `client_ip`).
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Client {
        Client {
            ip: client_ip(headers, peer, self.trust_proxy),
            user_agent: headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The anonymous id of `client` on `site_id` for the UTC day of `now`, and in the
    /// first half hour of the day, its id of the day before.
    pub async fn user_id(
        &self,
        site_id: &str,
        client: &Client,
        now: DateTime<Utc>,
    ) -> Result<(String, Option<String>), StoreError> {
        let today = now.date_naive();
        let id = anonymous_id(&self.salt(today).await?, site_id, client);
        let since_midnight = now - today.and_time(NaiveTime::MIN).and_utc();
        let before = match today.pred_opt() {
            Some(yesterday) if since_midnight < CONTINUE_FOR => {
                Some(anonymous_id(&self.salt(yesterday).await?, site_id, client))
            }
            _ => None,
        };
        Ok((id, before))
    }

    async fn salt(&self, day: NaiveDate) -> Result<Vec<u8>, StoreError> {
        let mut salts = self.salts.lock().await;
        if let Some((_, salt)) = salts.iter().find(|(d, _)| *d == day) {
            return Ok(salt.clone());
        }
        let salt = self.store.daily_salt(day, rand::random()).await?;
        salts.retain(|(d, _)| *d >= day.pred_opt().unwrap_or(day));
        salts.push((day, salt.clone()));
        Ok(salt)
    }
}

/// 64 bits of SHA-256 over salt, site, IP and user agent: collisions are negligible at
/// any site's daily visitor count, and the id says nothing about its inputs.
fn anonymous_id(salt: &[u8], site_id: &str, client: &Client) -> String {
    let ip = client.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let mut hash = Sha256::new();
    for part in [
        salt,
        site_id.as_bytes(),
        ip.as_bytes(),
        client.user_agent.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str, ua: &str) -> Client {
        Client {
            ip: ip.parse().ok(),
            user_agent: ua.to_owned(),
        }
    }

    #[test]
    fn the_id_depends_on_every_input() {
        let base = anonymous_id(b"salt", "site", &client("10.0.0.1", "Firefox"));
        assert_eq!(base.len(), 16);
        assert_eq!(
            base,
            anonymous_id(b"salt", "site", &client("10.0.0.1", "Firefox"))
        );
        for other in [
            anonymous_id(b"salt2", "site", &client("10.0.0.1", "Firefox")),
            anonymous_id(b"salt", "site2", &client("10.0.0.1", "Firefox")),
            anonymous_id(b"salt", "site", &client("10.0.0.2", "Firefox")),
            anonymous_id(b"salt", "site", &client("10.0.0.1", "Chrome")),
        ] {
            assert_ne!(base, other);
        }
    }
}
