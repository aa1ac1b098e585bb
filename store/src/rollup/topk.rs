//! The most frequent values of a dimension, as a bounded summary: at most [`CAPACITY`]
//! counters, so that a rollup bucket never grows with the number of distinct values a
//! client sends.
//!
//! It is a Misra-Gries summary (Misra and Gries 1982; merging as in Agarwal et al.,
//! "Mergeable Summaries", 2012). Values are kept by their 64-bit id (see `hash`); texts
//! live once each in the values dictionary. Adding a batch or another bucket adds the
//! counters; when more than `CAPACITY` are left, the (`CAPACITY`+1)-th largest count is
//! subtracted from every counter, those at or below zero are dropped, and the amount is
//! added to `error`. So:
//!
//! - a summary that never had to shrink is exact (`error` is 0): a bucket, or a whole
//!   range, with at most `CAPACITY` distinct values;
//! - otherwise every count is at most `error` below the truth, never above it, and
//!   `error` ≤ N / (`CAPACITY` + 1), N being the events summarized: each shrink removes
//!   at least (`CAPACITY` + 1) × the amount from the counters' total, which starts at N.
//!   Any value whose true count exceeds `error` is in the summary.
//!
//! Merging summaries keeps the bound (the errors add up, as the events do).

use std::collections::HashMap;

use crate::{Result, StoreError};

/// Most counters a summary keeps.
pub const CAPACITY: usize = 1024;
/// The stored form's first byte.
const VERSION: u8 = 1;
/// Bytes per stored counter: id and count.
const ENTRY_BYTES: usize = 16;

/// Counts of value ids, bounded (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopK {
    counts: HashMap<u64, u64>,
    /// How far below the truth any count may be.
    error: u64,
}

impl TopK {
    /// Exact counts, such as one batch's; shrunk if there are too many.
    pub fn from_counts(counts: HashMap<u64, u64>) -> Self {
        let mut top = Self { counts, error: 0 };
        top.shrink(CAPACITY);
        top
    }

    /// Adds `n` to the value `id`, without shrinking: for counting raw events into a
    /// range's summary, which is read once and dropped.
    pub fn add_exact(&mut self, id: u64, n: u64) {
        *self.counts.entry(id).or_default() += n;
    }

    /// Adds another summary and shrinks back to [`CAPACITY`]: what a bucket does with
    /// a batch.
    pub fn merge(&mut self, other: &TopK) {
        self.merge_unbounded(other);
        self.shrink(CAPACITY);
    }

    /// Adds another summary without shrinking: a query merging the buckets of a range
    /// keeps every counter, which is more accurate and, for a range's few dozen
    /// buckets, small.
    pub fn merge_unbounded(&mut self, other: &TopK) {
        if self.counts.is_empty() && self.error == 0 {
            self.clone_from(other);
            return;
        }
        self.counts.reserve(other.counts.len());
        for (id, n) in &other.counts {
            *self.counts.entry(*id).or_default() += n;
        }
        self.error += other.error;
    }

    /// How far below the truth any count may be; 0 when the counts are exact.
    #[cfg(test)]
    fn error(&self) -> u64 {
        self.error
    }

    /// Distinct values counted.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }

    /// The counters, largest first, ties by id.
    pub fn ranked(&self) -> Vec<(u64, u64)> {
        let mut ranked: Vec<(u64, u64)> = self.counts.iter().map(|(id, n)| (*id, *n)).collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// Keeps at most `capacity` counters (see the module doc).
    fn shrink(&mut self, capacity: usize) {
        if self.counts.len() <= capacity {
            return;
        }
        let mut values: Vec<u64> = self.counts.values().copied().collect();
        // The (capacity+1)-th largest count: every counter loses that much.
        let (_, cut, _) = values.select_nth_unstable_by(capacity, |a, b| b.cmp(a));
        let cut = *cut;
        self.counts.retain(|_, n| {
            *n = n.saturating_sub(cut);
            *n > 0
        });
        self.error += cut;
    }

    /// The stored form: a version byte, the error, then (id, count) pairs sorted by id,
    /// all little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<(u64, u64)> = self.counts.iter().map(|(i, n)| (*i, *n)).collect();
        entries.sort_unstable();
        let mut out = Vec::with_capacity(9 + ENTRY_BYTES * entries.len());
        out.push(VERSION);
        out.extend_from_slice(&self.error.to_le_bytes());
        for (id, n) in entries {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Reads [`TopK::to_bytes`]; an empty slice is an empty summary.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let corrupt = || StoreError::Corrupt("a top-values summary is malformed".to_owned());
        let (&version, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if version != VERSION || rest.len() < 8 || (rest.len() - 8) % ENTRY_BYTES != 0 {
            return Err(corrupt());
        }
        let (error, entries) = rest.split_at(8);
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        Ok(Self {
            error: word(error),
            counts: entries
                .chunks_exact(ENTRY_BYTES)
                .map(|e| (word(&e[..8]), word(&e[8..])))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn exact(items: &[u64]) -> HashMap<u64, u64> {
        let mut counts = HashMap::new();
        for i in items {
            *counts.entry(*i).or_default() += 1;
        }
        counts
    }

    #[test]
    fn few_values_stay_exact_and_round_trip() {
        let mut top = TopK::from_counts(exact(&[1, 2, 2, 3, 3, 3]));
        top.merge(&TopK::from_counts(exact(&[3, 4])));
        assert_eq!(top.error(), 0);
        assert_eq!(top.ranked(), vec![(3, 4), (2, 2), (1, 1), (4, 1)]);
        assert_eq!(TopK::from_bytes(&top.to_bytes()).unwrap(), top);
        assert!(TopK::from_bytes(&[VERSION, 1, 2]).is_err());
    }

    /// Many batches of a skewed stream, merged into day summaries, merged again into a
    /// range: every count within `error` below the truth, `error` within N/(K+1), and
    /// every value above `error` present.
    #[test]
    fn the_error_bound_holds_through_batches_and_merges() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut truth: HashMap<u64, u64> = HashMap::new();
        let mut range = TopK::default();
        let mut total = 0_u64;
        for _day in 0..5 {
            let mut day = TopK::default();
            for _batch in 0..40 {
                let items: Vec<u64> = (0..500)
                    .map(|_| {
                        // Half the events on 50 popular values, half on a long tail.
                        if rng.random_bool(0.5) {
                            rng.random_range(0..50)
                        } else {
                            rng.random_range(0..1_000_000)
                        }
                    })
                    .collect();
                for i in &items {
                    *truth.entry(*i).or_default() += 1;
                }
                total += items.len() as u64;
                day.merge(&TopK::from_counts(exact(&items)));
                assert!(day.len() <= CAPACITY);
            }
            range.merge_unbounded(&day);
        }
        assert!(range.error() > 0, "the tail is longer than the capacity");
        assert!(range.error() <= total / (CAPACITY as u64 + 1));
        let counted: HashMap<u64, u64> = range.ranked().into_iter().collect();
        for (id, n) in &truth {
            let got = counted.get(id).copied().unwrap_or(0);
            assert!(got <= *n && *n - got <= range.error(), "{id}: {got} of {n}");
            if *n > range.error() {
                assert!(got > 0, "{id} ({n}) is missing");
            }
        }
    }
}
