//! Who may read what.
//!
//! Without `ADMIN_TOKEN` Beacon is open: anyone may read any site's numbers, as the
//! start-up log warns, and the admin API is off. With it, every read needs
//! `Authorization: Bearer <key>`: the admin token, or a read key of the site asked about.
//! No key or an unknown one is `401`; a key of another site is `403`.
//!
//! A read key is `bk_<key_id>_<secret>`. The store keeps the id and a SHA-256 of the
//! secret, never the secret, and is asked on every request, so that a revoked key stops
//! working at once on every server. Secrets are 256 random bits, so a plain hash is as
//! good as a slow one; hashes are compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use beacon_store::{ApiKey, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::{ApiError, with_timeout};

/// How often a key's `last_used_at` is written, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What a request may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Open mode: everything.
    Open,
    /// The admin token: everything, and the admin API.
    Admin,
    /// A read key: one site.
    Site(String),
}

impl Access {
    /// `Ok` if this access may read `site_id`'s numbers.
    pub fn may_read(&self, site_id: &str) -> Result<(), ApiError> {
        match self {
            Self::Open | Self::Admin => Ok(()),
            Self::Site(own) if own == site_id => Ok(()),
            Self::Site(_) => Err(ApiError::Forbidden(format!(
                "this key does not read site `{site_id}`"
            ))),
        }
    }
}

/// Checks bearer tokens against the admin token and the stored keys.
#[derive(Debug)]
pub struct Auth {
    admin: Option<[u8; 32]>,
    store: Store,
    /// When this process last wrote each key's `last_used_at`.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Auth {
    /// Keys are checked against `store`; `admin_token` set means secured mode.
    pub fn new(admin_token: Option<&str>, store: Store) -> Self {
        Self {
            admin: admin_token.map(digest),
            store,
            touched: Mutex::default(),
        }
    }

    /// Whether Beacon runs without `ADMIN_TOKEN`.
    pub fn is_open(&self) -> bool {
        self.admin.is_none()
    }

    /// The access `headers` give (see the module doc).
    pub async fn access(&self, headers: &HeaderMap, timeout: Duration) -> Result<Access, ApiError> {
        let Some(admin) = &self.admin else {
            return Ok(Access::Open);
        };
        let token = bearer(headers).ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer <key>`".to_owned())
        })?;
        if bool::from(digest(token).ct_eq(admin)) {
            return Ok(Access::Admin);
        }
        let unknown = || ApiError::Unauthorized("unknown or revoked key".to_owned());
        let (key_id, secret) = split_key(token).ok_or_else(unknown)?;
        let key = with_timeout(timeout, self.store.key(key_id))
            .await?
            .ok_or_else(unknown)?;
        if !bool::from(digest(secret).as_slice().ct_eq(&key.hash)) {
            return Err(unknown());
        }
        self.touch(&key);
        Ok(Access::Site(key.site_id))
    }

    /// Records the key's use, at most once a minute per key and process, off the
    /// request's path.
    fn touch(&self, key: &ApiKey) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched
                .get(&key.key_id)
                .is_some_and(|at| at.elapsed() < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(key.key_id.clone(), Instant::now());
        }
        let (store, key_id) = (self.store.clone(), key.key_id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&key_id, chrono::Utc::now()).await {
                tracing::debug!(error = %e, "cannot record a key's use");
            }
        });
    }
}

/// A new read key for `site_id`: the record to store, and the key to show once.
pub fn new_key(site_id: &str) -> (ApiKey, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let key_id = hex(&id);
    let secret = hex(&secret);
    let record = ApiKey {
        key_id: key_id.clone(),
        site_id: site_id.to_owned(),
        hash: digest(&secret).to_vec(),
        created_at: chrono::Utc::now(),
        last_used_at: None,
    };
    (record, format!("bk_{key_id}_{secret}"))
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The id and secret of `bk_<key_id>_<secret>`.
fn split_key(token: &str) -> Option<(&str, &str)> {
    token.strip_prefix("bk_")?.split_once('_')
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The access of a read request: rejects it (`401`) when secured and the key is
/// missing or unknown. Each handler then checks the site it reads.
#[derive(Debug)]
pub struct Reader(pub Access);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let timeout = state.limits.store_timeout;
        Ok(Self(state.auth.access(&parts.headers, timeout).await?))
    }
}

/// An admin request: only with the admin token, and only when one is set.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.auth.is_open() {
            return Err(ApiError::Forbidden(
                "the admin API is off until ADMIN_TOKEN is set".to_owned(),
            ));
        }
        match state
            .auth
            .access(&parts.headers, state.limits.store_timeout)
            .await?
        {
            Access::Admin => Ok(Self),
            _ => Err(ApiError::Forbidden("this needs the admin token".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_hash_what_they_show() {
        let (record, key) = new_key("site-1");
        let (id, secret) = split_key(&key).unwrap();
        assert_eq!(id, record.key_id);
        assert_eq!(digest(secret).to_vec(), record.hash);
        assert!(!record.hash.is_empty() && !key.contains(&hex(&record.hash)));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        assert_eq!(bearer(&headers), Some(key.as_str()));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
