//! The tracker's state and rules: which events are recorded, what each carries, and
//! what is sent or kept when a send succeeds or fails.
//!
//! It is plain Rust with no browser calls: the snippet reads the page (path, storage,
//! clock, randomness) and does the sending, and hands the results in as arguments. Each
//! call across the wasm boundary costs code in both languages, so the boundary is a few
//! calls with plain values, and everything here can be tested natively.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use beacon_protocol::ValidationError;
use beacon_protocol::rules::{validate_fields, validate_props_size};

use crate::buffer::Buffer;
use crate::config::Config;
use crate::consent::{Blocked, Visit, blocked};
use crate::{ids, json};

/// Send early when this many events are waiting, rather than waiting for the timer.
pub const FLUSH_AT: usize = 50;
/// Bodies handed to the browser and not yet answered. Beyond this the oldest are given
/// up on (they are probably delivered, by a `fetch` that never reported back).
pub const MAX_IN_FLIGHT: usize = 16;

/// One page's tracker.
#[derive(Debug)]
pub struct Tracker {
    config: Config,
    user_id: Option<String>,
    /// DNT/GPC or a local host: decided once, at start. The opt-out is not: the snippet
    /// reads it at each call, so that opting out in one tab stops the others.
    blocked_at_start: Option<Blocked>,
    buffer: Buffer,
    /// Bodies being sent, by the id the snippet gave them, with their events to put
    /// back if the send fails.
    in_flight: Vec<(u32, Vec<String>)>,
    last_path: Option<String>,
    /// `"referrer":…,"utm_source":…` as the snippet read them from the page load,
    /// copied into each event (the server takes a visit's from its first).
    arrival: String,
}

/// What a call records: the event's type, the page's path, and its properties as JSON
/// with the number of their keys.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// `page_view`, `click` or a custom type.
    pub event_type: &'a str,
    /// The page's path as the site routes.
    pub path: &'a str,
    /// The properties, a JSON object, and how many keys it has.
    pub props: Option<(&'a str, u32)>,
    /// Epoch milliseconds.
    pub now_ms: f64,
    /// 10 random bytes for the event id.
    pub random: [u8; 10],
    /// A page view after a history change, recorded only if the path changed.
    pub navigated: bool,
}

impl Tracker {
    /// A tracker for `config` on a visit described by `visit`. `stored_user_id` is the
    /// id kept on this device, if any; `random` makes a new one when there is none.
    /// `arrival` is the JSON object of the page load's referrer and `utm_*` tags.
    pub fn new(
        config: Config,
        visit: &Visit,
        stored_user_id: Option<String>,
        random: [u8; 16],
        arrival: &str,
    ) -> Self {
        let blocked_at_start = blocked(
            &config,
            &Visit {
                opted_out: false,
                ..visit.clone()
            },
        );
        let user_id = if config.cookieless || blocked_at_start.is_some() {
            None
        } else {
            Some(
                stored_user_id
                    .filter(|id| !id.is_empty() && id.len() <= 64)
                    .unwrap_or_else(|| ids::anonymous_user_id(random)),
            )
        };
        let arrival = arrival
            .strip_prefix("{")
            .and_then(|a| a.strip_suffix("}"))
            .unwrap_or_default()
            .to_owned();
        Self {
            config,
            user_id,
            blocked_at_start,
            buffer: Buffer::default(),
            in_flight: Vec::new(),
            last_path: None,
            arrival,
        }
    }

    /// The settings this tracker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Why nothing is sent, if so.
    pub fn blocked(&self, opted_out: bool) -> Option<Blocked> {
        if opted_out {
            return Some(Blocked::OptedOut);
        }
        self.blocked_at_start
    }

    /// Records an event unless the visit is blocked. `Ok(true)` asks the snippet to
    /// send now; `Err` names what was wrong with a refused event.
    pub fn record(&mut self, opted_out: bool, r: Record<'_>) -> Result<bool, &'static str> {
        if r.event_type == "page_view" {
            // History calls that keep the path (a `replaceState` for a query string,
            // say) are not new pages.
            if r.navigated && self.last_path.as_deref() == Some(r.path) {
                return Ok(false);
            }
            self.last_path = Some(r.path.to_owned());
        }
        if self.blocked(opted_out).is_some() {
            return Ok(false);
        }
        validate_fields(
            &self.config.site_id,
            r.event_type,
            Some(r.path),
            self.user_id.as_deref(),
        )
        .and_then(|()| match r.props {
            Some((props, keys)) => validate_props_size(keys as usize, props.len()),
            None => Ok(()),
        })
        .map_err(|e| refused_field(&e))?;
        let id = ids::event_id(r.now_ms as u64, r.random);
        let mut event = String::with_capacity(160 + r.path.len() + self.arrival.len());
        event.push('{');
        for (name, value) in [
            ("event_id", Some(id.as_str())),
            ("site_id", Some(self.config.site_id.as_str())),
            ("event_type", Some(r.event_type)),
            ("path", Some(r.path)),
            ("user_id", self.user_id.as_deref()),
        ] {
            if let Some(value) = value {
                if event.len() > 1 {
                    event.push(',');
                }
                json::push_string(&mut event, name);
                event.push(':');
                json::push_string(&mut event, value);
            }
        }
        if !self.arrival.is_empty() {
            event.push(',');
            event.push_str(&self.arrival);
        }
        // Epoch milliseconds, which the server reads as well as RFC 3339.
        event.push_str(",\"timestamp\":");
        json::push_u64(&mut event, r.now_ms as u64);
        if let Some((props, _)) = r.props {
            event.push_str(",\"props\":");
            event.push_str(props);
        }
        event.push('}');
        self.buffer.push(event);
        Ok(self.buffer.len() >= FLUSH_AT)
    }

    /// The next request body to send, parked under `id` until [`Tracker::settled`].
    /// Nothing while the visit is blocked (what waits is dropped then).
    pub fn next_body(&mut self, opted_out: bool, id: u32) -> Option<String> {
        if self.blocked(opted_out).is_some() {
            self.clear();
            return None;
        }
        let body = self.buffer.next_body(self.config.cookieless)?;
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.remove(0);
        }
        self.in_flight.push((id, body.events));
        Some(body.json)
    }

    /// The answer to body `id`: an HTTP status, or 0 when it never reached the server.
    /// Events refused for a reason that may pass (offline, 408, 429, 5xx) go back to
    /// the buffer for the next send; their ids make the resend safe. `true` when the
    /// server refused the body for good, which the snippet reports on the console.
    pub fn settled(&mut self, id: u32, status: u16) -> bool {
        let Some((_, events)) = self
            .in_flight
            .iter()
            .position(|(i, _)| *i == id)
            .map(|at| self.in_flight.remove(at))
        else {
            return false;
        };
        if status == 0 || status == 408 || status == 429 || status >= 500 {
            self.buffer.requeue(events);
            return false;
        }
        !(200..300).contains(&status)
    }

    /// Forgets everything waiting (the visitor opted out).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.in_flight.clear();
    }

    /// Events waiting to be sent.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The anonymous user id, if this visit has one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// The field a refused event got wrong. Kept to a name, without the formatted message,
/// because formatting code would weigh more than the rest of the tracker.
fn refused_field(e: &ValidationError) -> &'static str {
    match e {
        ValidationError::Empty(field)
        | ValidationError::TooLong { field, .. }
        | ValidationError::ControlCharacters(field) => field,
        ValidationError::PropsTooLarge => "props (too many or too large)",
        ValidationError::TimestampInFuture => "timestamp",
        ValidationError::Malformed(_) => "the event",
    }
}

#[cfg(test)]
mod tests {
    use beacon_protocol::batch::parse_batch;

    use super::*;

    fn config(cookieless: bool) -> Config {
        let attrs = |name: &str| match name {
            "data-site-id" => Some("site-test".to_owned()),
            "data-cookieless" if cookieless => Some(String::new()),
            _ => None,
        };
        Config::from_attributes(attrs, "https://stats.example/sdk/beacon.js").unwrap()
    }

    fn visit(hostname: &str) -> Visit {
        Visit {
            hostname: hostname.into(),
            protocol: "https:".into(),
            ..Visit::default()
        }
    }

    fn tracker(cookieless: bool) -> Tracker {
        let arrival = r#"{"referrer":"https://news.example/a","utm_source":"mail"}"#;
        Tracker::new(
            config(cookieless),
            &visit("shop.example"),
            None,
            [7; 16],
            arrival,
        )
    }

    fn at(path: &str) -> Record<'_> {
        Record {
            event_type: "page_view",
            path,
            props: None,
            now_ms: 1_700_000_000_123.0,
            random: [1; 10],
            navigated: false,
        }
    }

    fn sent(t: &mut Tracker) -> Vec<beacon_protocol::event::Event> {
        let body = t.next_body(false, 1).unwrap();
        t.settled(1, 202);
        parse_batch(body.as_bytes())
            .unwrap()
            .events
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn events_carry_what_the_server_reads() {
        let mut t = tracker(false);
        let props = r#"{"plan":"pro \"x\""}"#;
        t.record(false, at("/a\"b")).unwrap();
        let custom = Record {
            event_type: "signup",
            props: Some((props, 1)),
            random: [2; 10],
            ..at("/a\"b")
        };
        t.record(false, custom).unwrap();
        let events = sent(&mut t);
        assert_eq!(events.len(), 2);
        let e = &events[1];
        assert_eq!(e.site_id, "site-test");
        assert_eq!(e.event_type, "signup");
        assert_eq!(e.path.as_deref(), Some("/a\"b"));
        assert_eq!(e.user_id.as_deref(), t.user_id());
        assert_eq!(e.utm_source.as_deref(), Some("mail"));
        assert_eq!(e.referrer.as_deref(), Some("https://news.example/a"));
        assert_eq!(e.props.as_ref().unwrap()["plan"], "pro \"x\"");
        assert_eq!(e.timestamp.unwrap().timestamp_millis(), 1_700_000_000_123);
        assert_ne!(e.event_id, events[0].event_id);
    }

    #[test]
    fn refused_events_name_the_field_and_are_not_kept() {
        let mut t = tracker(false);
        let empty = Record {
            event_type: "",
            ..at("/")
        };
        assert_eq!(t.record(false, empty), Err("event_type"));
        let big = "x".repeat(100_000);
        let too_big = Record {
            props: Some((&big, 1)),
            ..at("/")
        };
        assert!(t.record(false, too_big).unwrap_err().starts_with("props"));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn navigation_counts_only_when_the_route_changes() {
        let mut t = tracker(false);
        t.record(false, at("/")).unwrap();
        let navigated = |path| Record {
            navigated: true,
            ..at(path)
        };
        t.record(false, navigated("/")).unwrap();
        assert_eq!(t.pending(), 1);
        t.record(false, navigated("/next")).unwrap();
        assert_eq!(t.pending(), 2);
    }

    #[test]
    fn opting_out_drops_what_waits_and_records_nothing() {
        let mut t = tracker(false);
        t.record(false, at("/")).unwrap();
        assert_eq!(t.next_body(true, 1), None);
        assert_eq!(t.pending(), 0);
        t.record(true, at("/")).unwrap();
        assert_eq!(t.pending(), 0);
        assert_eq!(t.blocked(true), Some(Blocked::OptedOut));
        assert_eq!(t.blocked(false), None);
    }

    #[test]
    fn failed_sends_come_back_and_refused_ones_do_not() {
        let mut t = tracker(true);
        assert_eq!(t.user_id(), None, "cookieless: no id on the device");
        t.record(false, at("/")).unwrap();
        let body = t.next_body(false, 1).unwrap();
        assert!(parse_batch(body.as_bytes()).unwrap().cookieless);
        assert_eq!(t.pending(), 0);
        assert!(!t.settled(1, 503));
        assert_eq!(t.pending(), 1, "back for the next try");
        t.next_body(false, 2).unwrap();
        assert!(t.settled(2, 400), "refused for good");
        assert_eq!(t.pending(), 0);
        assert!(!t.settled(2, 0), "an unknown id is ignored");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn bodies_in_flight_stay_bounded() {
        let mut t = tracker(false);
        for id in 0..(MAX_IN_FLIGHT as u32 + 5) {
            t.record(false, at("/")).unwrap();
            t.next_body(false, id).unwrap();
        }
        assert_eq!(t.in_flight.len(), MAX_IN_FLIGHT);
        assert!(!t.settled(0, 0), "given up on");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_stored_id_is_kept_and_local_visits_get_none() {
        let stored = Some("abc".to_owned());
        let t = Tracker::new(config(false), &visit("shop.example"), stored, [0; 16], "{}");
        assert_eq!(t.user_id(), Some("abc"));
        let local = Tracker::new(config(false), &visit("localhost"), None, [0; 16], "{}");
        assert_eq!(local.blocked(false), Some(Blocked::Local));
        assert_eq!(local.user_id(), None);
    }
}
