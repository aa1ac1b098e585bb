//! Building an event to track: `beacon::event("signup").path("/welcome")`.

use beacon_protocol::Event;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// An event to track, built fluently: `beacon::event("signup").path("/welcome")`.
///
/// The client fills in the site, a UUIDv7 `event_id` and the time when it is tracked, and
/// the client's user id unless the event names its own.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let replayed = beacon::event("page_view")
///     .path("/home")
///     .at(Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap());
/// # let _ = replayed;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    pub(crate) event_type: String,
    pub(crate) path: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) timestamp: Option<DateTime<Utc>>,
    pub(crate) props: Option<Map<String, Value>>,
    pub(crate) referrer: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) utm: [Option<String>; 5],
}

/// Starts an event of any type.
///
/// ```
/// let e = beacon::event("signup").path("/welcome").user("u42").prop("plan", "pro");
/// # let _ = e;
/// ```
pub fn event(event_type: impl Into<String>) -> Track {
    Track {
        event_type: event_type.into(),
        ..Track::default()
    }
}

impl Track {
    /// The path the event happened on.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The user, overriding the client's.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// When it happened, if not now (for example when replaying a log).
    pub fn at(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds a property.
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.props
            .get_or_insert_with(Map::new)
            .insert(key.into(), value.into());
        self
    }

    /// Where the visitor came from (a URL), for a server that tracks its visitors'
    /// page views: the request's `Referer`.
    pub fn referrer(mut self, url: impl Into<String>) -> Self {
        self.referrer = Some(url.into());
        self
    }

    /// The visitor's user agent, for a server that tracks its visitors: their browser,
    /// system and device are worked out from it (and bots left out). Without it, the
    /// SDK's own request's `User-Agent` is what the server sees.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// The host the page is on.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Campaign tags: `utm_source`, `utm_medium` and `utm_campaign`.
    pub fn campaign(
        mut self,
        source: impl Into<String>,
        medium: impl Into<String>,
        campaign: impl Into<String>,
    ) -> Self {
        self.utm[0] = Some(source.into());
        self.utm[1] = Some(medium.into());
        self.utm[2] = Some(campaign.into());
        self
    }

    /// `utm_content` and `utm_term`.
    pub fn campaign_details(mut self, content: impl Into<String>, term: impl Into<String>) -> Self {
        self.utm[3] = Some(content.into());
        self.utm[4] = Some(term.into());
        self
    }

    pub(crate) fn into_event(self, site_id: &str, default_user: Option<&str>) -> Event {
        let [utm_source, utm_medium, utm_campaign, utm_content, utm_term] = self.utm;
        Event {
            site_id: site_id.to_owned(),
            event_type: self.event_type,
            path: self.path,
            user_id: self.user_id.or_else(|| default_user.map(str::to_owned)),
            timestamp: Some(self.timestamp.unwrap_or_else(Utc::now)),
            event_id: Some(uuid::Uuid::now_v7()),
            props: self.props,
            referrer: self.referrer,
            user_agent: self.user_agent,
            hostname: self.hostname,
            utm_source,
            utm_medium,
            utm_campaign,
            utm_content,
            utm_term,
        }
    }
}
