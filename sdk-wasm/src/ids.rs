//! Event ids and anonymous user ids. The randomness comes from the caller (the browser's
//! `crypto.getRandomValues`), so these stay plain functions.

use uuid::{Builder, Uuid};

/// A UUIDv7: time-ordered, so the server's queue and indexes stay append-mostly, and
/// unique, so that a resent event is stored once.
pub fn event_id(unix_millis: u64, random: [u8; 10]) -> Uuid {
    Builder::from_unix_timestamp_millis(unix_millis, &random).into_uuid()
}

/// An anonymous visitor id: 128 random bits, nothing derived from the visitor.
pub fn anonymous_user_id(random: [u8; 16]) -> String {
    Builder::from_random_bytes(random)
        .into_uuid()
        .simple()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_v7_and_ordered_by_time() {
        let a = event_id(1_700_000_000_000, [7; 10]);
        let b = event_id(1_700_000_000_001, [0; 10]);
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn user_ids_are_32_hex_digits() {
        let id = anonymous_user_id([0xab; 16]);
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
