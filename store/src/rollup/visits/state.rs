//! A visitor's visit so far, as stored: small, and read and written by every move that
//! has an event of theirs.

use ahash::AHashSet as HashSet;

use super::super::VISIT_DIMS;
use super::super::bytes::{Reader, put_varint as put, unzigzag, zigzag};
use super::{GAP_MS, MAX_VISIT_MS, SEEN_CAP};
use crate::{Result, StoreError};

/// The stored form's first byte.
pub(super) const VERSION: u8 = 1;

/// A visitor's current visit, and what they were counted for today.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisitState {
    /// The visit's first event, epoch milliseconds.
    pub start: i64,
    /// Its latest event.
    pub last: i64,
    /// Its events.
    pub events: u32,
    /// Its page views.
    pub pageviews: u32,
    /// The value ids of its attributes, in [`VISIT_DIMS`]' order; 0 for none.
    pub attrs: Vec<u64>,
    /// The UTC day (its first millisecond) that `seen` is about.
    pub day: i64,
    /// What was counted today, by key (see `seen_key`).
    pub seen: HashSet<u64>,
}

impl VisitState {
    pub(super) fn bounce(&self) -> i64 {
        i64::from(self.events == 1 && self.pageviews == 1)
    }

    /// Whether an event at `t` continues this visit.
    pub(super) fn continued_by(&self, t: i64) -> bool {
        t >= self.last && t - self.last <= GAP_MS && t - self.start < MAX_VISIT_MS
    }

    /// Whether the visit could still go on at `t`.
    pub fn alive_at(&self, t: i64) -> bool {
        t >= self.last && t - self.last <= GAP_MS
    }

    /// The stored form: a version byte, then LEB128 varints (times zigzagged), the
    /// attributes as a bit mask and 8 bytes each, and the day's counted keys.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 8 * self.seen.len());
        out.push(VERSION);
        put(&mut out, zigzag(self.start));
        put(&mut out, (self.last - self.start).max(0) as u64);
        put(&mut out, u64::from(self.events));
        put(&mut out, u64::from(self.pageviews));
        let mask = self
            .attrs
            .iter()
            .enumerate()
            .filter(|(_, id)| **id != 0)
            .fold(0u64, |m, (i, _)| m | (1 << i));
        put(&mut out, mask);
        for id in self.attrs.iter().filter(|id| **id != 0) {
            out.extend_from_slice(&id.to_le_bytes());
        }
        put(&mut out, zigzag(self.day));
        put(&mut out, self.seen.len() as u64);
        for key in &self.seen {
            out.extend_from_slice(&key.to_le_bytes());
        }
        out
    }

    /// Reads [`VisitState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::read(bytes)
            .ok_or_else(|| StoreError::Corrupt("a visit state is malformed".to_owned()))
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let mut r = Reader(rest);
        let start = unzigzag(r.varint()?);
        let last = start.checked_add(i64::try_from(r.varint()?).ok()?)?;
        let events = u32::try_from(r.varint()?).ok()?;
        let pageviews = u32::try_from(r.varint()?).ok()?;
        let mask = r.varint()?;
        let attrs = (0..VISIT_DIMS.len())
            .map(|i| {
                if mask & (1 << i) != 0 {
                    r.word()
                } else {
                    Some(0)
                }
            })
            .collect::<Option<Vec<u64>>>()?;
        let day = unzigzag(r.varint()?);
        let n = usize::try_from(r.varint()?).ok()?;
        let seen = (0..n.min(SEEN_CAP))
            .map(|_| r.word())
            .collect::<Option<_>>()?;
        Some(Self {
            start,
            last,
            events,
            pageviews,
            attrs,
            day,
            seen,
        })
    }
}
