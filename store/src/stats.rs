//! `/stats`, assembled from what a backend read for each piece of the range's plan
//! (`rollup::plan`): the buckets it merged, and the raw events at the ragged ends.

use beacon_protocol::Stats;

use crate::rollup::Rollup;

/// What a backend read for one piece of the plan.
#[derive(Debug)]
pub(crate) enum Part {
    /// The contents of the buckets that tile the piece.
    Buckets(Rollup),
    /// The path and user of each raw event in the piece.
    Raw(Vec<(Option<String>, Option<String>)>),
}

/// Adds up the parts: top paths by count, ties by path.
pub(crate) fn assemble(parts: Vec<Part>, limit: u32) -> Stats {
    let mut total = Rollup::default();
    for part in parts {
        match part {
            Part::Buckets(buckets) => total.merge(&buckets),
            Part::Raw(rows) => {
                for (path, user) in rows {
                    total.add(path.as_deref(), user.as_deref());
                }
            }
        }
    }
    total.into_stats(limit)
}
