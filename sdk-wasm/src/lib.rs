//! Beacon's browser SDK: a wasm tracker, loaded by the one-line snippet (`js/beacon.js`).
//!
//! - [`config`]: the snippet's `data-*` settings.
//! - [`consent`]: whether a visit may be tracked (opt-out, DNT/GPC, localhost).
//! - [`ids`]: UUIDv7 event ids and anonymous visitor ids.
//! - [`json`]: the little JSON an event needs.
//! - [`buffer`]: pending events, cut into bodies that `sendBeacon` accepts.
//! - [`tracker`]: what is recorded, what each event carries, and what a failed send
//!   keeps.
//!
//! The split with the snippet: the snippet does the browser's part (listening, reading
//! the location and `localStorage`, the clock and randomness, `fetch` and `sendBeacon`)
//! and calls in here, inside `try/catch`, with plain values; this module keeps the
//! state and the rules, shared with the server through `beacon-protocol`. Every call
//! across the boundary costs glue on both sides, and the whole SDK is downloaded by
//! every visitor, so the boundary is kept to the few calls below.

pub mod buffer;
pub mod config;
pub mod consent;
pub mod ids;
pub mod json;
pub mod tracker;

use js_sys::Function;
use wasm_bindgen::prelude::*;

use crate::config::Config;
use crate::consent::Visit;
use crate::tracker::{Record, Tracker};

// A 1 KB allocator in place of the standard 5 KB one: the tracker holds at most a
// thousand small strings, for which a free list is fast enough.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

/// The tracker on one page, as the snippet holds it.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Beacon {
    tracker: Tracker,
    /// Answers a random 32-bit number (`crypto.getRandomValues`).
    random: Function,
    /// Answers whether the visitor has opted out, read from `localStorage` at each
    /// call, so that opting out in one tab stops the others.
    opted_out: Function,
}

/// Starts tracking. `ask(name)` answers the snippet's `<script>` tag's attributes
/// (`data-site-id`, …) and these facts about the visit, each a string or `null`:
/// `src` (the script's URL), `hostname` and `protocol` (the page's location), `dnt`
/// and `gpc` (`"1"` when the browser sends Do Not Track or Global Privacy Control),
/// `uid` (the visitor id kept on this device) and `arrival` (the JSON object of the
/// page load's referrer and `utm_*` tags). Fails, with a message for the console, when
/// the tag has no `data-site-id` or a setting is wrong.
#[wasm_bindgen]
pub fn start(ask: &Function, random: Function, opted_out: Function) -> Result<Beacon, JsError> {
    let ask = |name: &str| {
        ask.call1(&JsValue::NULL, &JsValue::from_str(name))
            .ok()?
            .as_string()
    };
    let config = Config::from_attributes(ask, &ask("src").unwrap_or_default())
        .map_err(|e| JsError::new(&(String::from("beacon: ") + e)))?;
    let visit = Visit {
        hostname: ask("hostname").unwrap_or_default(),
        protocol: ask("protocol").unwrap_or_default(),
        do_not_track: ask("dnt").is_some_and(|v| v == "1"),
        global_privacy_control: ask("gpc").is_some_and(|v| v == "1"),
        opted_out: false,
    };
    let mut id = [0; 16];
    fill_random(&random, &mut id);
    let arrival = ask("arrival").unwrap_or_default();
    Ok(Beacon {
        tracker: Tracker::new(config, &visit, ask("uid"), id, &arrival),
        random,
        opted_out,
    })
}

#[wasm_bindgen]
impl Beacon {
    /// Records an event at `path`: a page view, a click or a custom event, with its
    /// properties as a JSON object of `keys` keys. `navigated` marks a page view after
    /// a history change, recorded only if the path changed. Returns `true` when enough
    /// is waiting to send now; a refused event is a console warning.
    pub fn record(
        &mut self,
        event_type: &str,
        path: &str,
        props: Option<String>,
        keys: u32,
        navigated: bool,
    ) -> bool {
        let mut random = [0; 10];
        fill_random(&self.random, &mut random);
        let record = Record {
            event_type,
            path,
            props: props.as_deref().map(|p| (p, keys)),
            now_ms: js_sys::Date::now(),
            random,
            navigated,
        };
        let opted_out = self.opted_out();
        self.tracker
            .record(opted_out, record)
            .unwrap_or_else(|field| {
                web_sys::console::warn_2(
                    &JsValue::from_str("beacon: event not sent; the problem is in"),
                    &JsValue::from_str(field),
                );
                false
            })
    }

    /// The next request body to send, under the snippet's `id` for it.
    pub fn next_body(&mut self, id: u32) -> Option<String> {
        let opted_out = self.opted_out();
        self.tracker.next_body(opted_out, id)
    }

    /// The answer to body `id`: its HTTP status, or 0 if it never got one. `true` when
    /// the server refused it for good.
    pub fn settled(&mut self, id: u32, status: u16) -> bool {
        self.tracker.settled(id, status)
    }

    /// Forgets what waits (the visitor opted out).
    pub fn clear(&mut self) {
        self.tracker.clear();
    }

    /// Whether this visit is tracked at all.
    pub fn tracking(&self) -> bool {
        self.tracker.blocked(self.opted_out()).is_none()
    }

    /// Where bodies go.
    pub fn endpoint(&self) -> String {
        self.tracker.config().endpoint.clone()
    }

    /// How often to send, in milliseconds.
    pub fn flush_ms(&self) -> u32 {
        self.tracker.config().flush_interval_ms
    }

    /// Whether the hash is part of the path (`data-hash-routing`).
    pub fn hash_routing(&self) -> bool {
        self.tracker.config().hash_routing
    }

    /// The anonymous visitor id to keep on this device; none in cookieless mode.
    pub fn user_id(&self) -> Option<String> {
        self.tracker.user_id().map(str::to_owned)
    }
}

impl Beacon {
    fn opted_out(&self) -> bool {
        self.opted_out
            .call0(&JsValue::NULL)
            .is_ok_and(|v| v.is_truthy())
    }
}

/// Fills `bytes` from `random`, four at a time.
fn fill_random(random: &Function, bytes: &mut [u8]) {
    for chunk in bytes.chunks_mut(4) {
        let word = random
            .call0(&JsValue::NULL)
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or_default() as u32;
        for (byte, source) in chunk.iter_mut().zip(word.to_le_bytes()) {
            *byte = source;
        }
    }
}
