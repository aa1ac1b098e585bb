//! Size limits, shared so that an SDK never sends what the server would refuse.

/// Longest `site_id`, in bytes.
pub const MAX_SITE_ID_BYTES: usize = 128;
/// Longest `event_type`, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Longest `path`, in bytes. URLs longer than this are almost always junk or attacks.
pub const MAX_PATH_BYTES: usize = 2048;
/// Longest `user_id`, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Longest `referrer`, in bytes.
pub const MAX_REFERRER_BYTES: usize = 2048;
/// Longest `user_agent`, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 1024;
/// Longest `hostname`, in bytes: a DNS name's limit.
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest `utm_*` tag, in bytes.
pub const MAX_UTM_BYTES: usize = 256;
/// Most `props` an event may carry.
pub const MAX_PROPS: usize = 32;
/// Largest `props` object, in bytes of compact JSON.
pub const MAX_PROPS_BYTES: usize = 4096;
/// Largest body for `POST /event`.
pub const MAX_EVENT_BODY_BYTES: usize = 16 * 1024;
/// Largest body for `POST /events`, after decompression.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;
/// Most events in one `POST /events`.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// How far in the future a client clock may be before its timestamp is refused.
pub const MAX_CLOCK_SKEW_SECS: i64 = 24 * 3600;
/// Largest `limit` for top paths in `/stats`.
pub const MAX_TOP_PATHS: u32 = 1000;
/// Default `limit` for top paths in `/stats`.
pub const DEFAULT_TOP_PATHS: u32 = 10;
