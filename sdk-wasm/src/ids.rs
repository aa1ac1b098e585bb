//! Event ids and anonymous user ids. The randomness comes from the caller (the browser's
//! `crypto.getRandomValues`), so these stay plain functions.
//!
//! The UUID layouts are written out here rather than taken from the `uuid` crate, whose
//! builder and text encoder weigh more in the module than the few lines below; the
//! tests check them against `uuid`.

use alloc::string::String;

use crate::json::push_digit;

/// A UUIDv7, hyphenated: time-ordered, so the server's queue and indexes stay
/// append-mostly, and unique, so that a resent event is stored once.
pub fn event_id(unix_millis: u64, random: [u8; 10]) -> String {
    let mut bytes = [0u8; 16];
    let millis = unix_millis.to_be_bytes();
    bytes[..6].copy_from_slice(&millis[2..]);
    bytes[6..].copy_from_slice(&random);
    let mut text = String::with_capacity(36);
    for (i, byte) in with_version(bytes, 0x70).iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        push_hex(&mut text, *byte);
    }
    text
}

/// An anonymous visitor id: a UUIDv4 as 32 hex digits, nothing derived from the visitor.
pub fn anonymous_user_id(random: [u8; 16]) -> String {
    let mut text = String::with_capacity(32);
    for byte in with_version(random, 0x40) {
        push_hex(&mut text, byte);
    }
    text
}

/// Sets the version nibble and the RFC 4122 variant bits.
fn with_version(mut bytes: [u8; 16], version: u8) -> [u8; 16] {
    bytes[6] = version | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    bytes
}

fn push_hex(text: &mut String, byte: u8) {
    push_digit(text, byte >> 4);
    push_digit(text, byte & 15);
}

#[cfg(test)]
mod tests {
    use uuid::{Builder, Uuid};

    use super::*;

    #[test]
    fn event_ids_are_the_uuid_crates_v7() {
        for (millis, random) in [
            (1_700_000_000_000, [7; 10]),
            (0, [0xff; 10]),
            (123, [0; 10]),
        ] {
            let ours = event_id(millis, random);
            let theirs = Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
            assert_eq!(ours, theirs.hyphenated().to_string());
            assert_eq!(Uuid::parse_str(&ours).unwrap().get_version_num(), 7);
        }
        assert!(event_id(1_700_000_000_000, [0xff; 10]) < event_id(1_700_000_000_001, [0; 10]));
    }

    #[test]
    fn user_ids_are_the_uuid_crates_v4_in_32_hex_digits() {
        for random in [[0xab; 16], [0; 16], [0xff; 16]] {
            let ours = anonymous_user_id(random);
            let theirs = Builder::from_random_bytes(random).into_uuid();
            assert_eq!(ours, theirs.simple().to_string());
        }
    }
}
