//! Events waiting to be sent, already serialized, cut into request bodies that fit what
//! `navigator.sendBeacon` and `fetch(…, {keepalive})` accept.

use alloc::string::String;
use alloc::vec::Vec;

use beacon_protocol::limits::MAX_BATCH_EVENTS;

/// Browsers refuse `sendBeacon` and keepalive bodies beyond 64 KiB in flight per page.
pub const MAX_BODY_BYTES: usize = 60 * 1024;
/// Events kept while the server is unreachable; beyond this the oldest are dropped, so a
/// long-lived tab never grows without bound.
pub const MAX_BUFFERED: usize = 1000;

/// One request's worth of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The `POST /events` body.
    pub json: String,
    /// The events in it, to put back if sending fails.
    pub events: Vec<String>,
}

/// The pending events, oldest first, each as compact JSON.
#[derive(Debug, Default)]
pub struct Buffer {
    events: Vec<String>,
    dropped: u64,
}

impl Buffer {
    /// Adds an event, dropping the oldest when full.
    pub fn push(&mut self, event_json: String) {
        if self.events.len() >= MAX_BUFFERED {
            self.events.remove(0);
            self.dropped += 1;
        }
        self.events.push(event_json);
    }

    /// Puts events that failed to send back in front, in their order, within the bound.
    /// The oldest of them are the ones given up on when there is no room.
    pub fn requeue(&mut self, mut events: Vec<String>) {
        let room = MAX_BUFFERED.saturating_sub(self.events.len());
        let given_up = events.len().saturating_sub(room);
        self.dropped += given_up as u64;
        let mut kept = events.split_off(given_up);
        kept.append(&mut self.events);
        self.events = kept;
    }

    /// The oldest events waiting, as one body of at most [`MAX_BODY_BYTES`] and
    /// [`MAX_BATCH_EVENTS`] events; `None` when nothing waits.
    pub fn next_body(&mut self, cookieless: bool) -> Option<Body> {
        let tail = if cookieless {
            "],\"cookieless\":true}"
        } else {
            "]}"
        };
        let mut json = String::from("{\"events\":[");
        let mut taken = 0;
        for event in &self.events {
            let full = json.len() + 1 + event.len() + tail.len() > MAX_BODY_BYTES
                || taken >= MAX_BATCH_EVENTS;
            if full && taken > 0 {
                break;
            }
            if taken > 0 {
                json.push(',');
            }
            json.push_str(event);
            taken += 1;
        }
        if taken == 0 {
            return None;
        }
        json.push_str(tail);
        let events = self.events.drain(..taken).collect();
        Some(Body { json, events })
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Forgets everything pending (the visitor opted out).
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use beacon_protocol::batch::parse_batch;

    use super::*;

    fn take_bodies(b: &mut Buffer, cookieless: bool) -> Vec<Body> {
        std::iter::from_fn(|| b.next_body(cookieless)).collect()
    }

    fn event(i: usize, pad: usize) -> String {
        format!(
            r#"{{"site_id":"s","event_type":"e{i}","path":"/{}"}}"#,
            "x".repeat(pad)
        )
    }

    #[test]
    fn bodies_parse_on_the_server_and_keep_order() {
        let mut b = Buffer::default();
        for i in 0..3 {
            b.push(event(i, 1));
        }
        let bodies = take_bodies(&mut b, true);
        assert_eq!(bodies.len(), 1);
        let parsed = parse_batch(bodies[0].json.as_bytes()).unwrap();
        assert!(parsed.cookieless);
        let types: Vec<_> = parsed
            .events
            .into_iter()
            .map(|e| e.unwrap().event_type)
            .collect();
        assert_eq!(types, ["e0", "e1", "e2"]);
        assert!(b.is_empty());
        assert!(!parse_batch(b"{\"events\":[]}").unwrap().cookieless);
    }

    #[test]
    fn bodies_stay_under_the_beacon_limit() {
        let mut b = Buffer::default();
        for i in 0..100 {
            b.push(event(i, 2000));
        }
        let bodies = take_bodies(&mut b, false);
        assert!(bodies.len() > 1);
        assert!(bodies.iter().all(|body| body.json.len() <= MAX_BODY_BYTES));
        let total: usize = bodies
            .iter()
            .map(|body| parse_batch(body.json.as_bytes()).unwrap().events.len())
            .sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn full_buffer_drops_the_oldest_and_requeue_keeps_order() {
        let mut b = Buffer::default();
        for i in 0..MAX_BUFFERED + 5 {
            b.push(event(i, 0));
        }
        assert_eq!(b.len(), MAX_BUFFERED);
        assert_eq!(b.dropped(), 5);
        let mut small = Buffer::default();
        small.push(event(1, 0));
        small.push(event(2, 0));
        let sent = small.next_body(false).unwrap().events;
        small.push(event(3, 0));
        small.requeue(sent);
        let again = small.next_body(false).unwrap().events;
        assert_eq!(again, [event(1, 0), event(2, 0), event(3, 0)]);
        // With room for one, the newest of the returned events is kept, in front.
        let mut nearly_full = Buffer::default();
        for i in 0..MAX_BUFFERED - 1 {
            nearly_full.push(event(i, 0));
        }
        nearly_full.requeue(vec![event(7, 0), event(8, 0), event(9, 0)]);
        assert_eq!(
            (nearly_full.len(), nearly_full.dropped()),
            (MAX_BUFFERED, 2)
        );
        assert_eq!(nearly_full.events[0], event(9, 0));
    }
}
