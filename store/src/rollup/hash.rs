//! Keyed hashes: the ids of users in the unique-users sketches and of values in the
//! top-values summaries.
//!
//! Both are SipHash-1-3 keyed with halves of a per-install secret, created on first
//! start and kept in the store (every server and worker of a MongoDB deployment reads
//! the same one). Keyed, so that a copy of the rollups does not reveal guessable user
//! ids (an e-mail address hashed without a key can be confirmed by hashing it again),
//! and so that nobody can craft two paths with the same id to merge their counts.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// Bytes of the per-install secret.
pub const SECRET_BYTES: usize = 32;

/// The keys derived from the install secret. Cheap to copy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    users: (u64, u64),
    values: (u64, u64),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)") // never log the secret
    }
}

impl Keys {
    /// The keys of a secret: its first half for users, its second for values.
    pub fn from_secret(secret: &[u8; SECRET_BYTES]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&secret[i * 8..(i + 1) * 8]);
            u64::from_le_bytes(w)
        };
        Self {
            users: (word(0), word(1)),
            values: (word(2), word(3)),
        }
    }

    /// The hash a user is counted by.
    pub fn user(&self, user_id: &str) -> u64 {
        hash(self.users, user_id)
    }

    /// The id of a value (a path, for one) in summaries and the values dictionary.
    pub fn value(&self, value: &str) -> u64 {
        hash(self.values, value)
    }
}

fn hash((k0, k1): (u64, u64), text: &str) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(k0, k1);
    hasher.write(text.as_bytes());
    hasher.finish()
}

/// A new random secret.
pub fn new_secret() -> [u8; SECRET_BYTES] {
    rand::random()
}

/// Reads a stored secret.
pub fn secret_from_bytes(bytes: &[u8]) -> crate::Result<[u8; SECRET_BYTES]> {
    bytes.try_into().map_err(|_| {
        crate::StoreError::Corrupt(format!(
            "the install secret is {} bytes, not {SECRET_BYTES}",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_installs_and_kinds() {
        let secret: [u8; SECRET_BYTES] = std::array::from_fn(|i| i as u8);
        let a = Keys::from_secret(&secret);
        let b = Keys::from_secret(&[2; SECRET_BYTES]);
        assert_eq!(a.user("u@example.com"), a.user("u@example.com"));
        assert_ne!(a.user("u@example.com"), b.user("u@example.com"));
        assert_ne!(a.user("/x"), a.value("/x"));
        assert_eq!(format!("{a:?}"), "Keys(..)");
    }
}
