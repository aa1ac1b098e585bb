//! Beacon's browser SDK, compiled to wasm and loaded by the one-line snippet
//! (`js/beacon.js`).
//!
//! - [`config`]: the snippet's `data-*` settings.
//! - [`consent`]: whether a visit may be tracked (opt-out, DNT/GPC, localhost).
//! - [`ids`]: UUIDv7 event ids and anonymous visitor ids.
//! - [`buffer`]: pending events, cut into bodies that `sendBeacon` accepts.
//! - [`tracker`]: reads the page, records events, and sends them.
//!
//! The snippet owns the page's event listeners and calls into [`Beacon`] inside
//! `try/catch`, so that even a bug here never throws into the page. Events go to
//! `POST /events` as `text/plain` JSON, which needs no CORS preflight.

pub mod buffer;
pub mod config;
pub mod consent;
pub mod ids;
pub mod tracker;

use std::rc::Rc;

use gloo_timers::callback::Interval;
use js_sys::Object;
use wasm_bindgen::prelude::*;
use web_sys::{Element, HtmlScriptElement};

use crate::config::Config;
use crate::tracker::Tracker;

/// The tracker on one page, as the snippet holds it.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Beacon {
    tracker: Rc<Tracker>,
    _flush_timer: Interval,
}

/// Starts tracking with the settings on `script` (the snippet's own `<script>` tag) and
/// records the first page view. `arrival` holds where the page load came from (its
/// `referrer` and `utm_*` tags), read by the loader, which does it in fewer bytes than
/// the browser bindings it would take here. Fails, with a message for the console, when the tag is
/// missing `data-site-id` or the page has no window.
#[wasm_bindgen]
pub fn start(script: &Element, arrival: Object) -> Result<Beacon, JsError> {
    let window = web_sys::window().ok_or_else(|| JsError::new("beacon: no window"))?;
    let src = script
        .dyn_ref::<HtmlScriptElement>()
        .map(HtmlScriptElement::src)
        .unwrap_or_default();
    let config = Config::from_attributes(|name| script.get_attribute(name), &src)
        .map_err(|e| JsError::new(&(String::from("beacon: ") + e)))?;
    let beacon = Beacon::new(config, window, arrival);
    beacon.tracker.page_view();
    Ok(beacon)
}

impl Beacon {
    fn new(config: Config, window: web_sys::Window, arrival: Object) -> Self {
        let interval = config.flush_interval_ms;
        let tracker = Tracker::new(config, window, arrival);
        let on_tick = Rc::clone(&tracker);
        Self {
            tracker,
            _flush_timer: Interval::new(interval, move || on_tick.flush(false)),
        }
    }
}

#[wasm_bindgen]
impl Beacon {
    /// `beacon.pageView()`: a page view for the current location.
    pub fn page_view(&self) {
        self.tracker.page_view();
    }

    /// Called by the snippet on `pushState`, `replaceState`, `popstate` (and
    /// `hashchange` when hash-routed): a page view if the route changed.
    pub fn navigated(&self) {
        self.tracker.navigated();
    }

    /// `beacon.track(type, props)`: a custom event.
    pub fn track(&self, event_type: &str, props: JsValue) {
        self.tracker.track(event_type, &props);
    }

    /// Called by the snippet for every click on the page.
    pub fn click(&self, target: JsValue) {
        self.tracker.click(&target);
    }

    /// Sends what is waiting; `closing` when the page is being hidden or unloaded.
    pub fn flush(&self, closing: bool) {
        self.tracker.flush(closing);
    }

    /// `beacon.optOut()`: nothing more is sent from this browser.
    pub fn opt_out(&self) {
        self.tracker.opt_out();
    }

    /// `beacon.optIn()`: undoes `optOut()`.
    pub fn opt_in(&self) {
        self.tracker.opt_in();
    }

    /// Whether this visit is tracked at all.
    pub fn tracking(&self) -> bool {
        self.tracker.blocked().is_none()
    }

    /// Events waiting to be sent.
    pub fn pending(&self) -> usize {
        self.tracker.pending()
    }

    /// The path that events on this page carry.
    pub fn current_path(&self) -> String {
        self.tracker.current_path()
    }

    /// The anonymous visitor id, if this visit has one (not in cookieless mode).
    pub fn user_id(&self) -> Option<String> {
        self.tracker.user_id().map(str::to_owned)
    }
}
