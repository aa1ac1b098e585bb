//! The snippet's settings, read from the `<script>` tag's `data-*` attributes.

use alloc::borrow::ToOwned;
use alloc::string::String;

/// How the snippet behaves on one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `data-site-id`, required.
    pub site_id: String,
    /// Where batches go: `data-api` (or the script's origin) plus `/events`.
    pub endpoint: String,
    /// `data-cookieless`: store nothing on the visitor's device; the server derives a
    /// daily-rotating anonymous user from IP, user agent and site.
    pub cookieless: bool,
    /// `data-respect-dnt`: send nothing when the browser signals Do Not Track or Global
    /// Privacy Control.
    pub respect_dnt: bool,
    /// `data-allow-localhost`: also send from `localhost`, which is otherwise skipped so
    /// that developers' own visits don't count.
    pub allow_localhost: bool,
    /// `data-hash-routing`: count `#/route` changes as page views (hash-routed SPAs).
    pub hash_routing: bool,
    /// `data-flush-ms`: how often buffered events are sent, default 5 s.
    pub flush_interval_ms: u32,
}

/// The default flush interval: long enough to batch a burst of clicks, short enough that
/// a page killed without `pagehide` loses little.
pub const DEFAULT_FLUSH_MS: u32 = 5_000;

/// The longest interval `setInterval` takes: browsers run a longer one at once, and
/// then again and again.
const MAX_FLUSH_MS: u32 = i32::MAX as u32;

impl Config {
    /// Reads the settings through `attr` (a `data-*` attribute by its full name).
    /// `script_src` is the script's absolute URL: its origin is the default API.
    pub fn from_attributes(
        attr: impl Fn(&str) -> Option<String>,
        script_src: &str,
    ) -> Result<Self, &'static str> {
        let site_id = attr("data-site-id")
            .map(|s| s.trim_ascii().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or("the script tag needs data-site-id=\"…\"")?;
        let api = match attr("data-api").filter(|s| !s.trim_ascii().is_empty()) {
            Some(api) => without_trailing_slashes(api.trim_ascii()).to_owned(),
            None => origin_of(script_src)
                .ok_or("cannot tell the server's address: set data-api=\"https://…\"")?
                .to_owned(),
        };
        let flag = |name: &str| {
            attr(name).is_some_and(|v| !matches!(v.trim_ascii(), "false" | "0" | "no" | "off"))
        };
        let flush_interval_ms = match attr("data-flush-ms") {
            Some(ms) => ms
                .trim_ascii()
                .parse::<u32>()
                .ok()
                .filter(|ms| (100..=MAX_FLUSH_MS).contains(ms))
                .ok_or("data-flush-ms must be a whole number of milliseconds, 100 to 2147483647")?,
            None => DEFAULT_FLUSH_MS,
        };
        Ok(Self {
            site_id,
            endpoint: api + "/events",
            cookieless: flag("data-cookieless"),
            respect_dnt: flag("data-respect-dnt"),
            allow_localhost: flag("data-allow-localhost"),
            hash_routing: flag("data-hash-routing"),
            flush_interval_ms,
        })
    }
}

/// `url` without the slashes it ends with. A loop of `strip_suffix`, because
/// `trim_end_matches` brings a string searcher that made the SDK 3.7 KB larger gzipped.
fn without_trailing_slashes(mut url: &str) -> &str {
    while let Some(shorter) = url.strip_suffix("/") {
        url = shorter;
    }
    url
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host_end = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let scheme_len = url.len() - rest.len();
    url.get(..scheme_len + host_end).filter(|_| host_end > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_api_defaults_to_the_scripts_origin() {
        let c = Config::from_attributes(
            attrs(&[("data-site-id", "site-001")]),
            "http://localhost:1000/sdk/beacon.js?x=1",
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://localhost:1000/events");
        assert_eq!(c.flush_interval_ms, DEFAULT_FLUSH_MS);
        assert!(!c.cookieless && !c.respect_dnt && !c.allow_localhost);
    }

    #[test]
    fn data_attributes_override() {
        let c = Config::from_attributes(
            attrs(&[
                ("data-site-id", " s "),
                ("data-api", "https://stats.example.com/"),
                ("data-cookieless", ""),
                ("data-respect-dnt", "true"),
                ("data-allow-localhost", "false"),
                ("data-flush-ms", "250"),
            ]),
            "https://cdn.example.net/beacon.js",
        )
        .unwrap();
        assert_eq!(c.site_id, "s");
        assert_eq!(c.endpoint, "https://stats.example.com/events");
        assert!(c.cookieless && c.respect_dnt && !c.allow_localhost);
        assert_eq!(c.flush_interval_ms, 250);
    }

    #[test]
    fn bad_settings_are_explained() {
        let src = "https://a.example/beacon.js";
        assert!(
            Config::from_attributes(attrs(&[]), src)
                .unwrap_err()
                .contains("data-site-id")
        );
        let err = Config::from_attributes(
            attrs(&[("data-site-id", "s"), ("data-flush-ms", "soon")]),
            src,
        )
        .unwrap_err();
        assert!(err.contains("data-flush-ms"));
        let too_long = attrs(&[("data-site-id", "s"), ("data-flush-ms", "2147483648")]);
        assert!(Config::from_attributes(too_long, src).is_err());
        assert!(Config::from_attributes(attrs(&[("data-site-id", "s")]), "file:///x.js").is_err());
    }
}
