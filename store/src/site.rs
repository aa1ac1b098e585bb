//! Sites and their read keys, as the admin API registers them.

use chrono::{DateTime, Utc};

/// A registered site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The id events carry.
    pub site_id: String,
    /// Hosts whose pages may send events (their subdomains too); empty: any.
    pub domains: Vec<String>,
    /// The IANA time zone its days and weeks are counted in.
    pub timezone: String,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// A read key of a site, as stored: a hash of the secret, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's public id, also the first part of the key.
    pub key_id: String,
    /// The site it reads.
    pub site_id: String,
    /// SHA-256 of the key's secret part.
    pub hash: Vec<u8>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used, to the minute.
    pub last_used_at: Option<DateTime<Utc>>,
}
