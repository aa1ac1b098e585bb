//! Enrichment at ingest, before an event is queued, so that raw user agents and IP
//! addresses are never stored: the user agent becomes a browser, a system and a device
//! type (`woothee`); bots are left out (`isbot` and `woothee`'s crawlers); the referrer
//! becomes a source and a channel (`referrers`); the IP address becomes a country, when
//! `GEOIP_DB` names a MaxMind-format database (`maxminddb`).
//!
//! Who is a bot: a crawler by `woothee`, or an agent on `isbot`'s list (crawlers,
//! headless browsers, monitors, scrapers), except the HTTP libraries in
//! [`SERVER_SIDE_CLIENTS`]: those are how servers send events (curl, in the README), so
//! their requests are kept. A server that tracks its visitors passes each visitor's
//! user agent in `user_agent`, and that one is judged instead.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use beacon_protocol::Event;
use beacon_store::Context;

use crate::referrers;

/// `isbot` patterns of HTTP libraries that servers send events with: not bots here.
const SERVER_SIDE_CLIENTS: &[&str] = &[
    "^curl",
    "^java/",
    "^php",
    "aiohttp",
    "axios",
    "go-http-client",
    "guzzlehttp",
    "httpclient",
    "httpurlconnection",
    "httpx",
    "node-fetch/",
    "okhttp",
    "pycurl",
    "python-requests",
    "python-urllib",
];

/// Most user agents kept parsed.
const AGENTS_KEPT: usize = 10_000;

/// What a user agent says about its visitor.
#[derive(Debug, Default)]
struct Agent {
    bot: bool,
    browser: Option<String>,
    browser_version: Option<String>,
    os: Option<String>,
    os_version: Option<String>,
    device: Option<String>,
}

/// Turns what a request says about its visitor into an event's [`Context`].
pub struct Enricher {
    agents: woothee::parser::Parser,
    /// Agents parsed already: visitors send the same few agents over and over, and
    /// parsing one (and matching it against the bot list) is most of enrichment's cost.
    /// Bounded, so that a flood of made-up agents only evicts.
    seen: quick_cache::sync::Cache<String, Arc<Agent>>,
    bots: isbot::Bots,
    countries: Option<maxminddb::Reader<Vec<u8>>>,
    bot_filter: bool,
    bots_dropped: AtomicU64,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("countries", &self.countries.is_some())
            .field("bot_filter", &self.bot_filter)
            .finish_non_exhaustive()
    }
}

/// Why the country database cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read GEOIP_DB {path}: {source}")]
pub struct GeoIpError {
    path: String,
    source: maxminddb::MaxMindDbError,
}

/// What ingest does with an event.
#[derive(Debug)]
pub enum Verdict {
    /// Queue it, with this context.
    Keep(Box<Context>),
    /// A bot's: drop it (and it is counted).
    Bot,
}

impl Enricher {
    /// Reads the country database at `geoip_db`, if given. `bot_filter` false keeps
    /// bots' events.
    pub fn new(geoip_db: Option<&Path>, bot_filter: bool) -> Result<Self, GeoIpError> {
        let countries = geoip_db
            .map(|path| {
                maxminddb::Reader::open_readfile(path).map_err(|source| GeoIpError {
                    path: path.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        Ok(Self {
            agents: woothee::parser::Parser::new(),
            seen: quick_cache::sync::Cache::new(AGENTS_KEPT),
            bots: {
                let mut bots = isbot::Bots::default();
                bots.remove(SERVER_SIDE_CLIENTS);
                bots
            },
            countries,
            bot_filter,
            bots_dropped: AtomicU64::new(0),
        })
    }

    /// Bots' events dropped so far.
    pub fn bots_dropped(&self) -> u64 {
        self.bots_dropped.load(Ordering::Relaxed)
    }

    /// The context of `event`, sent with the request's `User-Agent` (the event's own
    /// `user_agent` wins), from `ip`, from a page on `page_host` (`Origin`/`Referer`).
    pub fn enrich(
        &self,
        event: &Event,
        request_agent: Option<&str>,
        ip: Option<IpAddr>,
        page_host: Option<&str>,
    ) -> Verdict {
        let agent = event
            .user_agent
            .as_deref()
            .or(request_agent)
            .map(|a| self.agent(a));
        if self.bot_filter && agent.as_ref().is_some_and(|a| a.bot) {
            self.bots_dropped.fetch_add(1, Ordering::Relaxed);
            return Verdict::Bot;
        }
        let hostname = event
            .hostname
            .as_deref()
            .or(page_host)
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let referrer = event
            .referrer
            .as_deref()
            .and_then(referrer_parts)
            // A link within the site is not where the visit came from.
            .filter(|(host, _)| Some(host.as_str()) != hostname.as_deref());
        let origin = referrers::origin(
            referrer.as_ref().map(|(host, _)| host.as_str()),
            event.utm_source.as_deref(),
            event.utm_medium.as_deref(),
        );
        let mut context = Context {
            hostname,
            referrer: referrer.map(|(host, path)| format!("{host}{path}")),
            source: Some(origin.source),
            channel: Some(origin.channel.to_owned()),
            utm_source: event.utm_source.clone(),
            utm_medium: event.utm_medium.clone(),
            utm_campaign: event.utm_campaign.clone(),
            utm_content: event.utm_content.clone(),
            utm_term: event.utm_term.clone(),
            country: ip.and_then(|ip| self.country(ip)),
            ..Context::default()
        };
        if let Some(agent) = agent {
            context.browser.clone_from(&agent.browser);
            context.browser_version.clone_from(&agent.browser_version);
            context.os.clone_from(&agent.os);
            context.os_version.clone_from(&agent.os_version);
            context.device.clone_from(&agent.device);
        }
        Verdict::Keep(Box::new(context))
    }

    /// What `agent` says, from the cache or parsed now.
    fn agent(&self, agent: &str) -> Arc<Agent> {
        if let Some(known) = self.seen.get(agent) {
            return known;
        }
        let parsed = Arc::new(self.parse_agent(agent));
        self.seen.insert(agent.to_owned(), Arc::clone(&parsed));
        parsed
    }

    /// Whether `agent` is a bot's; its browser, system and device type, as usual
    /// analytics name them.
    fn parse_agent(&self, agent: &str) -> Agent {
        let parsed = self.agents.parse(agent);
        let crawler = parsed.as_ref().is_some_and(|r| r.category == "crawler");
        let mut described = Agent {
            bot: crawler || self.bots.is_bot(agent),
            ..Agent::default()
        };
        let Some(parsed) = parsed else {
            return described;
        };
        let known = |v: &str| (!v.is_empty() && v != "UNKNOWN").then(|| v.to_owned());
        described.browser = known(parsed.name);
        described.browser_version = known(parsed.version.split('.').next().unwrap_or_default());
        let (os, os_version) = match parsed.os {
            windows if windows.starts_with("Windows") => (
                Some("Windows".to_owned()),
                known(windows.trim_start_matches("Windows").trim()),
            ),
            "Mac OSX" => (Some("macOS".to_owned()), known(&parsed.os_version)),
            "iPhone" | "iPad" | "iPod" => (Some("iOS".to_owned()), known(&parsed.os_version)),
            "ChromeOS" => (Some("Chrome OS".to_owned()), known(&parsed.os_version)),
            other => (known(other), known(&parsed.os_version)),
        };
        described.os = os;
        described.os_version = os_version;
        let tablet = parsed.os == "iPad"
            || agent.contains("Tablet")
            || (parsed.os == "Android" && !agent.contains("Mobile"));
        described.device = match parsed.category {
            "pc" => Some("Desktop"),
            "smartphone" | "mobilephone" if tablet => Some("Tablet"),
            "smartphone" | "mobilephone" => Some("Mobile"),
            "appliance" => Some("Other"),
            _ => None,
        }
        .map(str::to_owned);
        described
    }

    /// The ISO code of `ip`'s country, if the database knows it.
    fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.countries.as_ref()?.lookup(ip).ok()?;
        let country: maxminddb::geoip2::Country<'_> = found.decode().ok()??;
        country.country.iso_code.map(str::to_owned)
    }
}

/// A referrer URL's host (lowercased, without a trailing dot) and path: the query
/// string and fragment are dropped, since they often carry personal data.
fn referrer_parts(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let path = match parsed.path() {
        "/" => String::new(),
        path => path.to_owned(),
    };
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(agent: &str) -> Option<Context> {
        let enricher = Enricher::new(None, true).unwrap();
        match enricher.enrich(&Event::new("s", "page_view"), Some(agent), None, None) {
            Verdict::Keep(context) => Some(*context),
            Verdict::Bot => None,
        }
    }

    #[test]
    fn browsers_systems_and_devices() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Chrome", "120", "Windows", "Desktop"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                ("Safari", "17", "iOS", "Tablet"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
                ("Chrome", "120", "Android", "Mobile"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Chrome", "120", "Android", "Tablet"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
                ("Safari", "17", "macOS", "Desktop"),
            ),
        ];
        for (agent, (browser, version, os, device)) in cases {
            let c = context(agent).expect("not a bot");
            assert_eq!(
                (
                    c.browser.as_deref(),
                    c.browser_version.as_deref(),
                    c.os.as_deref(),
                    c.device.as_deref()
                ),
                (Some(browser), Some(version), Some(os), Some(device)),
                "{agent}"
            );
        }
    }

    /// Real user agents of crawlers, previewers and headless browsers.
    const BOTS: &[&str] = &[
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Twitterbot/1.0",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 PTST/240101.123456",
        "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
        "Wget/1.21.3",
        "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    ];

    /// Real user agents of people's browsers, and of HTTP libraries servers send with.
    const PEOPLE: &[&str] = &[
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "Go-http-client/1.1",
        "okhttp/4.12.0",
    ];

    #[test]
    fn bots_are_left_out_and_people_and_servers_are_kept() {
        for agent in BOTS {
            assert!(context(agent).is_none(), "a bot: {agent}");
        }
        for agent in PEOPLE {
            assert!(context(agent).is_some(), "not a bot: {agent}");
        }
        let kept = Enricher::new(None, false).unwrap();
        assert!(matches!(
            kept.enrich(&Event::new("s", "page_view"), Some(BOTS[0]), None, None),
            Verdict::Keep(_)
        ));
        let mut relayed = Event::new("s", "page_view");
        relayed.user_agent = Some(BOTS[0].to_owned());
        let enricher = Enricher::new(None, true).unwrap();
        assert!(matches!(
            enricher.enrich(&relayed, Some("curl/8.5.0"), None, None),
            Verdict::Bot
        ));
        assert_eq!(enricher.bots_dropped(), 1);
    }

    #[test]
    fn countries_come_from_the_database() {
        let db = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testkit/data/geoip-test.mmdb"
        );
        let enricher = Enricher::new(Some(Path::new(db)), true).unwrap();
        let country = |ip: &str| match enricher.enrich(
            &Event::new("s", "page_view"),
            None,
            ip.parse().ok(),
            None,
        ) {
            Verdict::Keep(c) => c.country,
            Verdict::Bot => panic!("kept"),
        };
        assert_eq!(country("203.0.113.9").as_deref(), Some("DE"));
        assert_eq!(country("198.51.100.1").as_deref(), Some("US"));
        assert_eq!(country("2001:db8::1").as_deref(), Some("JP"));
        assert_eq!(country("10.1.2.3"), None);
        assert!(Enricher::new(Some(Path::new("/nonexistent.mmdb")), true).is_err());
    }

    #[test]
    fn referrers_lose_their_query_and_links_within_the_site_are_not_referrers() {
        let enricher = Enricher::new(None, true).unwrap();
        let mut e = Event::new("s", "page_view");
        e.referrer = Some("https://News.YCombinator.com/item?id=42#top".to_owned());
        let Verdict::Keep(c) = enricher.enrich(&e, None, None, Some("example.com")) else {
            panic!("kept");
        };
        assert_eq!(c.referrer.as_deref(), Some("news.ycombinator.com/item"));
        assert_eq!(c.source.as_deref(), Some("Hacker News"));
        assert_eq!(c.hostname.as_deref(), Some("example.com"));
        e.referrer = Some("https://example.com/other".to_owned());
        let Verdict::Keep(c) = enricher.enrich(&e, None, None, Some("example.com")) else {
            panic!("kept");
        };
        assert_eq!((c.referrer, c.channel.as_deref()), (None, Some("Direct")));
    }
}
