//! Whether this visit may be tracked at all. Decided from plain inputs so it can be
//! tested without a browser; `tracker` reads them from the page.

use alloc::string::String;

use crate::config::Config;

/// What the page and browser say about this visit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visit {
    /// `location.hostname`.
    pub hostname: String,
    /// `location.protocol`, such as `https:`.
    pub protocol: String,
    /// `navigator.doNotTrack == "1"`.
    pub do_not_track: bool,
    /// `navigator.globalPrivacyControl == true`.
    pub global_privacy_control: bool,
    /// The visitor called `beacon.optOut()` (a flag in `localStorage`).
    pub opted_out: bool,
}

/// Why nothing is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The visitor opted out.
    OptedOut,
    /// Do Not Track or Global Privacy Control, and the site asked to honour them.
    DoNotTrack,
    /// A developer's own machine (or a file), and the site didn't allow it.
    Local,
}

/// `None` when the visit may be tracked.
pub fn blocked(config: &Config, visit: &Visit) -> Option<Blocked> {
    if visit.opted_out {
        return Some(Blocked::OptedOut);
    }
    if config.respect_dnt && (visit.do_not_track || visit.global_privacy_control) {
        return Some(Blocked::DoNotTrack);
    }
    if !config.allow_localhost && is_local(visit) {
        return Some(Blocked::Local);
    }
    None
}

fn is_local(visit: &Visit) -> bool {
    let host = visit.hostname.as_str();
    let host = host
        .strip_prefix("[")
        .and_then(|h| h.strip_suffix("]"))
        .unwrap_or(host);
    visit.protocol == "file:"
        || host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("127.")
        || host == "::1"
        || host.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(respect_dnt: bool, allow_localhost: bool) -> Config {
        Config {
            site_id: "s".into(),
            endpoint: "https://a/events".into(),
            cookieless: false,
            respect_dnt,
            allow_localhost,
            hash_routing: false,
            flush_interval_ms: 5000,
        }
    }

    fn visit(hostname: &str) -> Visit {
        Visit {
            hostname: hostname.into(),
            protocol: "https:".into(),
            ..Visit::default()
        }
    }

    #[test]
    fn a_normal_visit_is_tracked() {
        assert_eq!(blocked(&config(true, false), &visit("shop.example")), None);
    }

    #[test]
    fn opt_out_always_wins() {
        let v = Visit {
            opted_out: true,
            ..visit("shop.example")
        };
        assert_eq!(blocked(&config(false, true), &v), Some(Blocked::OptedOut));
    }

    #[test]
    fn dnt_and_gpc_count_only_when_the_site_honours_them() {
        let dnt = Visit {
            do_not_track: true,
            ..visit("shop.example")
        };
        let gpc = Visit {
            global_privacy_control: true,
            ..visit("shop.example")
        };
        assert_eq!(
            blocked(&config(true, false), &dnt),
            Some(Blocked::DoNotTrack)
        );
        assert_eq!(
            blocked(&config(true, false), &gpc),
            Some(Blocked::DoNotTrack)
        );
        assert_eq!(blocked(&config(false, false), &dnt), None);
    }

    #[test]
    fn local_hosts_need_permission() {
        for host in ["localhost", "127.0.0.1", "[::1]", "app.localhost"] {
            assert_eq!(
                blocked(&config(false, false), &visit(host)),
                Some(Blocked::Local)
            );
            assert_eq!(blocked(&config(false, true), &visit(host)), None);
        }
        let file = Visit {
            protocol: "file:".into(),
            ..visit("")
        };
        assert_eq!(blocked(&config(false, false), &file), Some(Blocked::Local));
    }
}
