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
//! and calls in here, inside `try/catch`; this module keeps the state and the rules,
//! shared with the server through `beacon-protocol`. The whole SDK is downloaded by
//! every visitor, and every kind of value that crosses the boundary costs code on both
//! sides, so only numbers, booleans and strings cross it: no JavaScript objects or
//! callbacks, no classes, no thrown errors, no `Option` of a string given in. That
//! keeps the JavaScript side a few lines of the snippet (its `invoke`), in place of the
//! glue wasm-bindgen generates. Each snippet tag on a page gets a tracker of its own,
//! named by a small number, and a call that fails answers `-1` and leaves its reason
//! for [`problem`].
//!
//! The module's size is most of the SDK's, so text is read as bytes, and patterns and
//! computed characters are `&str`, never `char` (a `char` pattern, or a pushed `char`
//! that is not a literal, brings UTF-8 encoding into the module); `split`, `trim` and
//! `VecDeque` are left out too.
//!
//! In the browser the module is built without the standard library, whose panic and
//! formatting code would otherwise be linked in by any bounds check: a panic stops the
//! module (the snippet then stops tracking, never the page). The tests run natively,
//! with it.
#![cfg_attr(all(target_arch = "wasm32", not(test)), no_std)]

extern crate alloc;

pub mod buffer;
pub mod config;
pub mod consent;
pub mod ids;
pub mod json;
pub mod tracker;

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use spin::Mutex;
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

/// The trackers started on this page, one per snippet tag, by the number `start`
/// answered. A page runs one thread: the lock is never contended, and is taken with
/// `try_lock`, so that no call can wait or panic on it.
static TRACKERS: Mutex<Vec<Tracker>> = Mutex::new(Vec::new());
/// Why the last call that answered `-1` failed.
static PROBLEM: Mutex<&'static str> = Mutex::new("");

/// Runs `f` on tracker `t`; `None` if there is no such tracker.
fn with<T>(t: u32, f: impl FnOnce(&mut Tracker) -> T) -> Option<T> {
    TRACKERS.try_lock()?.get_mut(t as usize).map(f)
}

/// Answers `-1`, keeping `why` for [`problem`].
fn failed(why: &'static str) -> i32 {
    if let Some(mut problem) = PROBLEM.try_lock() {
        *problem = why;
    }
    -1
}

/// A panic in the browser stops the module: the call traps, and the snippet, which
/// makes every call inside `try`, stops tracking.
#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// Starts a tracker and answers its number, or `-1` (see [`problem`]) when the tag has
/// no `data-site-id` or a setting is wrong. `facts` holds `name`, NUL, `value`, NUL for
/// each of the snippet tag's attributes (`data-site-id`, …) and these facts about the
/// visit, each left out when unknown: `src` (the script's URL), `hostname` and
/// `protocol` (the page's location), `dnt` and `gpc` (`"1"` when the browser sends Do
/// Not Track or Global Privacy Control), `uid` (the visitor id kept on this device) and
/// `arrival` (the JSON object of the page load's referrer and `utm_*` tags). The
/// snippet leaves out a value holding a NUL (HTML's parser never leaves one in an
/// attribute), and puts the facts first: the first value of a name counts. `r0`…`r3`
/// are random.
#[wasm_bindgen]
pub fn start(facts: &str, r0: u32, r1: u32, r2: u32, r3: u32) -> i32 {
    // Cut at each NUL by hand: `split` would bring a generic searcher into the module.
    let mut fields = Vec::new();
    let mut from = 0;
    for (at, byte) in facts.bytes().enumerate() {
        if byte == 0 {
            fields.push(facts.get(from..at).unwrap_or_default());
            from = at + 1;
        }
    }
    let ask = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].to_owned())
    };
    let config = match Config::from_attributes(ask, &ask("src").unwrap_or_default()) {
        Ok(config) => config,
        Err(why) => return failed(why),
    };
    let visit = Visit {
        hostname: ask("hostname").unwrap_or_default(),
        protocol: ask("protocol").unwrap_or_default(),
        do_not_track: ask("dnt").is_some_and(|v| v == "1"),
        global_privacy_control: ask("gpc").is_some_and(|v| v == "1"),
        opted_out: false,
    };
    let id = random_bytes([r0, r1, r2, r3]);
    let arrival = ask("arrival").unwrap_or_default();
    let tracker = Tracker::new(config, &visit, ask("uid"), id, &arrival);
    let started = TRACKERS.try_lock().and_then(|mut all| {
        all.push(tracker);
        i32::try_from(all.len() - 1).ok()
    });
    started.unwrap_or_else(|| failed("cannot start another tracker"))
}

/// Why the last call that answered `-1` failed: a message, or the field of an event
/// that was not sent.
#[wasm_bindgen]
pub fn problem() -> String {
    PROBLEM
        .try_lock()
        .map(|problem| *problem)
        .unwrap_or_default()
        .to_owned()
}

/// Records an event at `path` on tracker `t`: a page view, a click or a custom event,
/// with its properties as a JSON object of `keys` keys (empty: none), at `now_ms` (epoch
/// milliseconds). `navigated` marks a page view after a history change, recorded only
/// if the path changed. `opted_out` is read by the snippet at each call, so that
/// opting out in one tab stops the others; `r0`…`r2` are random. Answers `1` when
/// enough is waiting to send now, `0` when not, and `-1` (see [`problem`]) when the
/// event is refused.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)] // plain values, the only kind that crosses
pub fn record(
    t: u32,
    event_type: &str,
    path: &str,
    props: &str,
    keys: u32,
    navigated: bool,
    now_ms: f64,
    opted_out: bool,
    r0: u32,
    r1: u32,
    r2: u32,
) -> i32 {
    // Spelled out rather than shared with `random_bytes`: a generic version made the
    // module 292 bytes larger gzipped.
    let [a, b, c] = [r0, r1, r2].map(u32::to_le_bytes);
    let random = [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1]];
    let record = Record {
        event_type,
        path,
        props: (!props.is_empty()).then_some((props, keys)),
        now_ms,
        random,
        navigated,
    };
    match with(t, |tracker| tracker.record(opted_out, record)) {
        Some(Ok(due)) => i32::from(due),
        Some(Err(field)) => failed(field),
        None => failed("no such tracker"),
    }
}

/// Tracker `t`'s next request body to send, under the snippet's `id` for it.
#[wasm_bindgen]
pub fn next_body(t: u32, id: u32, opted_out: bool) -> Option<String> {
    with(t, |tracker| tracker.next_body(opted_out, id)).flatten()
}

/// The answer to body `id`: its HTTP status, or 0 if it never got one. `true` when the
/// server refused it for good.
#[wasm_bindgen]
pub fn settled(t: u32, id: u32, status: u16) -> bool {
    with(t, |tracker| tracker.settled(id, status)).unwrap_or(false)
}

/// Forgets what waits (the visitor opted out).
#[wasm_bindgen]
pub fn clear(t: u32) {
    with(t, Tracker::clear);
}

/// Whether this visit is tracked at all.
#[wasm_bindgen]
pub fn tracking(t: u32, opted_out: bool) -> bool {
    with(t, |tracker| tracker.blocked(opted_out).is_none()).unwrap_or(false)
}

/// Where bodies go.
#[wasm_bindgen]
pub fn endpoint(t: u32) -> String {
    with(t, |tracker| tracker.config().endpoint.clone()).unwrap_or_default()
}

/// How often to send, in milliseconds.
#[wasm_bindgen]
pub fn flush_ms(t: u32) -> u32 {
    with(t, |tracker| tracker.config().flush_interval_ms).unwrap_or(config::DEFAULT_FLUSH_MS)
}

/// Whether the hash is part of the path (`data-hash-routing`).
#[wasm_bindgen]
pub fn hash_routing(t: u32) -> bool {
    with(t, |tracker| tracker.config().hash_routing).unwrap_or(false)
}

/// The anonymous visitor id to keep on this device; none in cookieless mode.
#[wasm_bindgen]
pub fn user_id(t: u32) -> Option<String> {
    with(t, |tracker| tracker.user_id().map(str::to_owned)).flatten()
}

/// 16 bytes from four random words.
fn random_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut bytes = [0; 16];
    for (chunk, word) in bytes.chunks_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use beacon_protocol::batch::parse_batch;

    use super::*;

    /// The trackers are one page's, shared: tests that start some take turns, since a
    /// call that finds the lock taken answers as if there were no tracker.
    static PAGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn facts(pairs: &[(&str, &str)]) -> String {
        pairs.iter().map(|(n, v)| format!("{n}\0{v}\0")).collect()
    }

    fn shop(extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("src", "https://stats.example/sdk/beacon.js"),
            ("hostname", "shop.example"),
            ("protocol", "https:"),
            ("arrival", "{}"),
        ];
        pairs.extend_from_slice(extra);
        facts(&pairs)
    }

    #[test]
    fn a_tag_is_read_from_its_facts_and_each_tag_has_its_own_tracker() {
        let _turn = PAGE.lock().unwrap();
        let first = start(&shop(&[("data-site-id", "shop")]), 1, 2, 3, 4);
        let second = start(
            &shop(&[
                ("data-site-id", "blog"),
                ("data-api", "https://api.example/"),
            ]),
            5,
            6,
            7,
            8,
        );
        assert!(first >= 0 && second > first);
        let (first, second) = (first as u32, second as u32);
        assert_eq!(endpoint(first), "https://stats.example/events");
        assert_eq!(endpoint(second), "https://api.example/events");
        assert!(tracking(first, false) && !tracking(first, true));
        assert_eq!(user_id(first).map(|id| id.len()), Some(32));
        assert_eq!(
            record(
                first,
                "page_view",
                "/a",
                "",
                0,
                false,
                1.7e12,
                false,
                1,
                2,
                3
            ),
            0
        );
        let body = next_body(first, 1, false).unwrap();
        let events = parse_batch(body.as_bytes()).unwrap().events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].as_ref().unwrap().site_id, "shop");
        assert!(!settled(first, 1, 202));
        assert_eq!(next_body(second, 1, false), None);
    }

    #[test]
    fn the_first_value_of_a_name_counts() {
        let _turn = PAGE.lock().unwrap();
        // The snippet puts the script's absolute URL before the tag's own `src`.
        let facts = shop(&[("src", "/sdk/beacon.js"), ("data-site-id", "shop")]);
        let t = start(&facts, 0, 0, 0, 0);
        assert_eq!(endpoint(t as u32), "https://stats.example/events");
    }

    #[test]
    fn failures_answer_minus_one_and_say_why() {
        let _turn = PAGE.lock().unwrap();
        assert_eq!(start(&shop(&[]), 0, 0, 0, 0), -1);
        assert!(problem().contains("data-site-id"));
        let t = start(&shop(&[("data-site-id", "shop")]), 0, 0, 0, 0) as u32;
        assert_eq!(record(t, "", "/", "", 0, false, 1.7e12, false, 0, 0, 0), -1);
        assert_eq!(problem(), "event_type");
        assert_eq!(
            record(
                u32::MAX,
                "page_view",
                "/",
                "",
                0,
                false,
                0.0,
                false,
                0,
                0,
                0
            ),
            -1
        );
        assert!(!tracking(u32::MAX, false));
    }
}
