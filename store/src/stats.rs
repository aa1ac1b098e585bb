//! `/stats`, assembled from what a backend read for each piece of the range's plan
//! (`rollup::plan`): the buckets it merged, and the raw events at the ragged ends.
//!
//! Top paths come from the merged path summaries (see `rollup::topk` for their error
//! bound), plus the raw events counted exactly. They are ranked by count, ties by path:
//! the texts of the paths that could make the list are looked up in the values
//! dictionary, at most [`TIE_LOOKUPS`] beyond the limit.

use std::collections::HashMap;

use beacon_protocol::{PathCount, Stats};

use crate::rollup::hash::Keys;
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::TopK;
use crate::rollup::{PATH, Rollup};

/// Most paths tied at the limit's count whose texts are looked up to order them by
/// path. Beyond that, ties are ordered by path id: on a long tail (a million paths
/// counted once or twice each) every lookup costs, and the order among equals matters
/// little.
const TIE_LOOKUPS: usize = 100;

/// What a backend read for one piece of the plan.
#[derive(Debug)]
pub(crate) enum Part {
    /// The contents of the buckets that tile the piece, merged without bounds.
    Buckets(Rollup),
    /// The path and user of each raw event in the piece.
    Raw(Vec<(Option<String>, Option<String>)>),
}

/// Buckets added up, every counter kept.
pub(crate) fn merged(buckets: Vec<crate::rollup::StoredBucket>) -> Rollup {
    let mut total = Rollup::default();
    for b in &buckets {
        total.merge_unbounded(&b.rollup);
    }
    total
}

/// A range's totals, before the texts of its top paths are known.
#[derive(Debug)]
pub(crate) struct Assembled {
    count: u64,
    users: Sketch,
    paths: TopK,
    /// Texts known already: those of raw events.
    texts: HashMap<u64, String>,
}

/// Adds up the parts.
pub(crate) fn assemble(parts: Vec<Part>, keys: &Keys) -> Assembled {
    let mut total = Rollup::default();
    let mut raw_paths = TopK::default();
    let mut texts = HashMap::new();
    let mut raw_users = Vec::new();
    for part in parts {
        match part {
            Part::Buckets(buckets) => total.merge_unbounded(&buckets),
            Part::Raw(rows) => {
                total.count += rows.len() as u64;
                for (path, user) in rows {
                    if let Some(path) = path {
                        let id = keys.value(&path);
                        raw_paths.add_exact(id, 1);
                        texts.entry(id).or_insert(path);
                    }
                    if let Some(user) = user {
                        raw_users.push(keys.user(&user));
                    }
                }
            }
        }
    }
    total.users.merge(&Sketch::from_hashes(raw_users));
    let mut paths = total.dims.remove(PATH.name).unwrap_or_default();
    paths.merge_unbounded(&raw_paths);
    Assembled {
        count: total.count,
        users: total.users,
        paths,
        texts,
    }
}

impl Assembled {
    /// The paths that could make the top `limit`, largest first: every one counted at
    /// least as often as the `limit`-th, up to [`TIE_LOOKUPS`] more.
    fn candidates(&self, limit: u32) -> Vec<(u64, u64)> {
        let mut ranked = self.paths.ranked();
        let limit = limit as usize;
        if let Some(&(_, last)) = ranked.get(limit.saturating_sub(1)) {
            let tied = ranked[limit..]
                .iter()
                .take_while(|(_, n)| *n == last)
                .count()
                .min(TIE_LOOKUPS);
            ranked.truncate(limit + tied);
        }
        if limit == 0 {
            ranked.clear();
        }
        ranked
    }

    /// The ids whose texts must be looked up to answer with the top `limit` paths.
    pub(crate) fn wanted_texts(&self, limit: u32) -> Vec<u64> {
        self.candidates(limit)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !self.texts.contains_key(id))
            .collect()
    }

    /// The answer: top paths by count, ties by path. A path whose text is missing from
    /// `looked_up` (which cannot happen unless the dictionary was damaged) is left out.
    pub(crate) fn into_stats(mut self, limit: u32, looked_up: HashMap<u64, String>) -> Stats {
        let candidates = self.candidates(limit);
        self.texts.extend(looked_up);
        let mut top: Vec<PathCount> = candidates
            .into_iter()
            .filter_map(|(id, count)| {
                let path = self.texts.remove(&id);
                if path.is_none() {
                    tracing::error!(id, "a counted path has no text in the values dictionary");
                }
                Some(PathCount { path: path?, count })
            })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        top.truncate(limit as usize);
        Stats {
            total_events: self.count,
            unique_users: self.users.count(),
            top_paths: top,
        }
    }
}
