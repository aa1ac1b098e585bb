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
//!
//! Each value also carries side counters ([`Counters`]): its visitors, and for visit
//! dimensions its bounces, time and page views. They are exact while the value has
//! never been dropped; a value dropped and counted again starts them afresh, like its
//! count.

// Value ids are keyed hashes already: a fast hasher is enough.
use ahash::AHashMap as HashMap;

use super::bytes::{Reader, put_varint, unzigzag, zigzag};
use crate::{Result, StoreError};

/// Most counters a summary keeps.
pub const CAPACITY: usize = 1024;
/// The stored form's first byte: 2 with side counters, 1 without (still read).
const VERSION: u8 = 2;
const VERSION_COUNTS_ONLY: u8 = 1;
/// Bytes per counter in the old form: id and count.
const ENTRY_BYTES_V1: usize = 16;
/// Side counters kept beside each value's count.
pub const EXTRAS: usize = 5;

/// A value's counters: the count the summary ranks and bounds by, and side counters
/// that ride along (visitors, bounces, durations, page views: see `rollup`). Side
/// counters may go down (a visit that stops being a bounce), the count never does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// What the summary ranks by: events, or visits.
    pub count: u64,
    /// The side counters, by index (`rollup::VISITORS`…).
    pub extra: [i64; EXTRAS],
}

impl Counters {
    /// Just a count.
    pub fn count(n: u64) -> Self {
        Self {
            count: n,
            extra: [0; EXTRAS],
        }
    }

    /// Adds `other`'s counters.
    pub fn add(&mut self, other: &Counters) {
        self.count += other.count;
        for (mine, theirs) in self.extra.iter_mut().zip(other.extra) {
            *mine += theirs;
        }
    }
}

/// Counters of value ids, bounded (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopK {
    counts: HashMap<u64, Counters>,
    /// How far below the truth any count may be.
    error: u64,
}

impl TopK {
    /// Exact counts, such as one batch's; shrunk if there are too many.
    pub fn from_counts(counts: HashMap<u64, u64>) -> Self {
        Self::from_counters(
            counts
                .into_iter()
                .map(|(id, n)| (id, Counters::count(n)))
                .collect(),
        )
    }

    /// Exact counters, such as one batch's; shrunk if there are too many.
    pub fn from_counters(counts: HashMap<u64, Counters>) -> Self {
        let mut top = Self { counts, error: 0 };
        top.shrink(CAPACITY);
        top
    }

    /// Adds `n` to the value `id`, without shrinking: for counting raw events into a
    /// range's summary, which is read once and dropped.
    pub fn add_exact(&mut self, id: u64, n: u64) {
        self.counts.entry(id).or_default().count += n;
    }

    /// Adds counters to the value `id`, without shrinking: for building one batch's
    /// contribution.
    pub fn add(&mut self, id: u64, counters: &Counters) {
        self.counts.entry(id).or_default().add(counters);
    }

    /// Adds another summary and shrinks back to [`CAPACITY`]: what a bucket does with
    /// a batch. Side counters of a value the bucket no longer holds, with no count of
    /// their own, are dropped: there is nothing left for them to adjust.
    pub fn merge(&mut self, other: &TopK) {
        self.counts.reserve(other.counts.len());
        for (id, c) in &other.counts {
            if c.count == 0 && !self.counts.contains_key(id) {
                continue;
            }
            self.counts.entry(*id).or_default().add(c);
        }
        self.error += other.error;
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
        for (id, c) in &other.counts {
            self.counts.entry(*id).or_default().add(c);
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

    /// The counts, largest first, ties by id.
    pub fn ranked(&self) -> Vec<(u64, u64)> {
        let mut ranked: Vec<(u64, u64)> =
            self.counts.iter().map(|(id, c)| (*id, c.count)).collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// Every value's counters, in no particular order.
    pub fn counters(&self) -> impl Iterator<Item = (u64, &Counters)> {
        self.counts.iter().map(|(id, c)| (*id, c))
    }

    /// Keeps at most `capacity` counters (see the module doc).
    fn shrink(&mut self, capacity: usize) {
        if self.counts.len() <= capacity {
            return;
        }
        let mut values: Vec<u64> = self.counts.values().map(|c| c.count).collect();
        // The (capacity+1)-th largest count: every counter loses that much.
        let (_, cut, _) = values.select_nth_unstable_by(capacity, |a, b| b.cmp(a));
        let cut = *cut;
        self.counts.retain(|_, c| {
            c.count = c.count.saturating_sub(cut);
            c.count > 0
        });
        self.error += cut;
    }

    /// The stored form: the version byte, the error, then for each value by id its id
    /// (8 bytes, little-endian: ids are hashes, which do not compress), its count, a
    /// byte saying which side counters are not zero, and those, zigzagged. Counts and
    /// side counters are LEB128 varints: most are small.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<(u64, &Counters)> = self.counters().collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        let mut out = Vec::with_capacity(10 + 12 * entries.len());
        out.push(VERSION);
        put_varint(&mut out, self.error);
        for (id, c) in entries {
            out.extend_from_slice(&id.to_le_bytes());
            put_varint(&mut out, c.count);
            let mask = c
                .extra
                .iter()
                .enumerate()
                .filter(|(_, x)| **x != 0)
                .fold(0u8, |m, (i, _)| m | (1 << i));
            out.push(mask);
            for x in c.extra.iter().filter(|x| **x != 0) {
                put_varint(&mut out, zigzag(*x));
            }
        }
        out
    }

    /// Reads [`TopK::to_bytes`] (or the older form without side counters); an empty
    /// slice is an empty summary.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let corrupt = || StoreError::Corrupt("a top-values summary is malformed".to_owned());
        let (&version, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if version == VERSION_COUNTS_ONLY {
            return Self::from_v1(rest).ok_or_else(corrupt);
        }
        if version != VERSION {
            return Err(corrupt());
        }
        let mut r = Reader(rest);
        let error = r.varint().ok_or_else(corrupt)?;
        let mut counts = HashMap::new();
        while !r.is_empty() {
            let id = r.word().ok_or_else(corrupt)?;
            let mut c = Counters::count(r.varint().ok_or_else(corrupt)?);
            let mask = r.byte().ok_or_else(corrupt)?;
            for (i, x) in c.extra.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    *x = unzigzag(r.varint().ok_or_else(corrupt)?);
                }
            }
            counts.insert(id, c);
        }
        Ok(Self { counts, error })
    }

    fn from_v1(rest: &[u8]) -> Option<Self> {
        if rest.len() < 8 || (rest.len() - 8) % ENTRY_BYTES_V1 != 0 {
            return None;
        }
        let (error, entries) = rest.split_at(8);
        let mut r = Reader(error);
        let error = r.word()?;
        let mut counts = HashMap::new();
        for e in entries.chunks_exact(ENTRY_BYTES_V1) {
            let mut r = Reader(e);
            counts.insert(r.word()?, Counters::count(r.word()?));
        }
        Some(Self { counts, error })
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
        assert!(TopK::from_bytes(&[VERSION_COUNTS_ONLY, 1, 2]).is_err());
    }

    #[test]
    fn side_counters_ride_along_round_trip_and_read_the_old_form() {
        let mut top = TopK::default();
        let side = Counters {
            count: 3,
            extra: [2, -1, 1 << 40, 0, 3],
        };
        top.add(7, &side);
        top.add(u64::MAX, &Counters::count(1));
        assert_eq!(TopK::from_bytes(&top.to_bytes()).unwrap(), top);
        // A side counter alone adjusts a value the bucket holds, and creates none.
        let mut bucket = top.clone();
        let mut delta = TopK::default();
        delta.add(
            7,
            &Counters {
                count: 0,
                extra: [0, 1, 0, 0, 0],
            },
        );
        delta.add(
            8,
            &Counters {
                count: 0,
                extra: [0, 1, 0, 0, 0],
            },
        );
        bucket.merge(&delta);
        let sevens: Vec<_> = bucket.counters().filter(|(id, _)| *id == 7).collect();
        assert_eq!(sevens[0].1.extra, [2, 0, 1 << 40, 0, 3]);
        assert_eq!(bucket.len(), 2);
        // The form before side counters: id and count, 16 bytes each.
        let mut old = vec![VERSION_COUNTS_ONLY];
        old.extend_from_slice(&5u64.to_le_bytes());
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(&4u64.to_le_bytes());
        let read = TopK::from_bytes(&old).unwrap();
        assert_eq!((read.error(), read.ranked()), (5, vec![(9, 4)]));
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
