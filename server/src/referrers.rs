//! Where a visitor came from, by the referrer's host: its source's name and channel,
//! from the Snowplow referer-parser list (`data/referers.json`, a maintained list of
//! search engines, social networks, webmail and ad networks) and a few newer sources
//! (`data/referers-extra.json`). Both are compiled in.
//!
//! Channels follow the usual analytics ones, decided in this order: `utm_medium` when
//! the page was tagged (`cpc`, `ppc`, `paid…` → `Paid`; `email`, `newsletter` → `Email`;
//! `social` → `Organic Social`), then the referrer's kind in the list (`search` →
//! `Organic Search`, `social` → `Organic Social`, `email` → `Email`, `paid` → `Paid`),
//! any other referrer → `Referral`, a `utm_source` alone → `Referral`, and nothing →
//! `Direct`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// A known source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    name: &'static str,
    medium: &'static str,
}

/// `{medium: {source: [domains]}}`.
#[derive(Deserialize)]
struct List(HashMap<String, HashMap<String, Vec<String>>>);

/// The lists: sources by host, and their names by lowercase name.
struct Lists {
    by_host: HashMap<String, Known>,
    names: HashMap<String, &'static str>,
}

fn known() -> &'static HashMap<String, Known> {
    &lists().by_host
}

fn lists() -> &'static Lists {
    static LISTS: OnceLock<Lists> = OnceLock::new();
    LISTS.get_or_init(|| {
        let mut by_host = HashMap::new();
        let mut names = HashMap::new();
        for text in [
            include_str!("../data/referers.json"),
            include_str!("../data/referers-extra.json"),
        ] {
            // Both files are compiled in and checked by a test.
            let Ok(List(list)) = serde_json::from_str::<List>(text) else {
                continue;
            };
            for (medium, sources) in list {
                let medium: &'static str = Box::leak(medium.into_boxed_str());
                for (name, domains) in sources {
                    let name: &'static str = Box::leak(name.into_boxed_str());
                    names.insert(name.to_lowercase(), name);
                    for domain in domains {
                        by_host.insert(domain, Known { name, medium });
                    }
                }
            }
        }
        Lists { by_host, names }
    })
}

/// The source of a referrer host: the list's entry for the host or one of its parent
/// domains (`www.google.de` finds `google.de` if only that is listed).
fn lookup(host: &str) -> Option<Known> {
    let list = known();
    let mut candidate = host;
    loop {
        if let Some(k) = list.get(candidate) {
            return Some(*k);
        }
        if let Some(k) = candidate.strip_prefix("www.").and_then(|h| list.get(h)) {
            return Some(*k);
        }
        let (_, parent) = candidate.split_once('.')?;
        if !parent.contains('.') {
            return None;
        }
        candidate = parent;
    }
}

/// What a visit's referrer and tags say about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `utm_source` (by the list's spelling if it names a listed source: `google` is
    /// `Google`), or the referrer's name (`Google`), or its host without `www.`, or
    /// `Direct / None`. A tag wins over the referrer, as in Plausible: it says what
    /// the site owner meant.
    pub source: String,
    /// See the module doc.
    pub channel: &'static str,
}

/// The source and channel of a visit that came from `referrer_host` (if any) with
/// `utm_source` and `utm_medium` (if tagged).
pub fn origin(
    referrer_host: Option<&str>,
    utm_source: Option<&str>,
    utm_medium: Option<&str>,
) -> Origin {
    let listed = referrer_host.and_then(lookup);
    let tag = utm_source.filter(|t| !t.trim().is_empty());
    let source = match (tag, listed, referrer_host) {
        (Some(tag), _, _) => lists()
            .names
            .get(&tag.to_lowercase())
            .map_or_else(|| tag.to_owned(), |name| (*name).to_owned()),
        (None, Some(k), _) => k.name.to_owned(),
        (None, None, Some(host)) => host.strip_prefix("www.").unwrap_or(host).to_owned(),
        (None, None, None) => "Direct / None".to_owned(),
    };
    let tagged = utm_medium.map(str::to_ascii_lowercase);
    let channel = match tagged.as_deref() {
        Some(m) if m.contains("cp") || m == "ppc" || m.starts_with("paid") => "Paid",
        Some("email" | "e-mail" | "e_mail" | "newsletter") => "Email",
        Some("social" | "social-network" | "social_network" | "sm") => "Organic Social",
        _ => match (listed.map(|k| k.medium), referrer_host, utm_source) {
            (Some("search"), _, _) => "Organic Search",
            (Some("social"), _, _) => "Organic Social",
            (Some("email"), _, _) => "Email",
            (Some("paid"), _, _) => "Paid",
            (_, Some(_), _) | (_, None, Some(_)) => "Referral",
            (_, None, None) => "Direct",
        },
    };
    Origin { source, channel }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_parse_and_name_common_sources() {
        for text in [
            include_str!("../data/referers.json"),
            include_str!("../data/referers-extra.json"),
        ] {
            assert!(serde_json::from_str::<List>(text).is_ok());
        }
        let cases = [
            (
                Some("www.google.com"),
                None,
                None,
                "Google",
                "Organic Search",
            ),
            (
                Some("www.google.de"),
                None,
                None,
                "Google",
                "Organic Search",
            ),
            (
                Some("news.ycombinator.com"),
                None,
                None,
                "Hacker News",
                "Organic Social",
            ),
            (Some("t.co"), None, None, "Twitter", "Organic Social"),
            (Some("x.com"), None, None, "X (Twitter)", "Organic Social"),
            (
                Some("blog.example.org"),
                None,
                None,
                "blog.example.org",
                "Referral",
            ),
            (
                Some("www.example.org"),
                None,
                None,
                "example.org",
                "Referral",
            ),
            (None, None, None, "Direct / None", "Direct"),
            (
                None,
                Some("newsletter"),
                Some("email"),
                "newsletter",
                "Email",
            ),
            (
                Some("www.google.com"),
                Some("google"),
                Some("cpc"),
                "Google",
                "Paid",
            ),
            (None, Some("partner"), None, "partner", "Referral"),
            (
                Some("www.google.com"),
                Some("newsletter"),
                None,
                "newsletter",
                "Organic Search",
            ),
        ];
        for (host, utm_source, utm_medium, source, channel) in cases {
            let got = origin(host, utm_source, utm_medium);
            assert_eq!(
                (got.source.as_str(), got.channel),
                (source, channel),
                "{host:?}"
            );
        }
    }
}
