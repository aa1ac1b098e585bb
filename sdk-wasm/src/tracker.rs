//! The tracker: builds events from the page, buffers them, and sends them with `fetch`
//! on a timer or with `navigator.sendBeacon` when the page goes away.
//!
//! Nothing here may panic or throw: every browser call that can fail is handled, and a
//! failure costs at most the events in hand.

use std::cell::RefCell;
use std::rc::Rc;

use beacon_protocol::ValidationError;
use beacon_protocol::event::{validate_fields, validate_props_size};
use js_sys::{JSON, Object, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Element, HtmlAnchorElement, RequestInit, RequestMode, Response, Storage, Window};

use crate::buffer::{Body, Buffer};
use crate::config::Config;
use crate::consent::{Blocked, Visit, blocked};
use crate::ids;

/// `localStorage` key of the anonymous visitor id.
pub const USER_KEY: &str = "beacon_uid";
/// `localStorage` key of the visitor's opt-out.
pub const OPT_OUT_KEY: &str = "beacon_opt_out";
/// Send early when this many events are waiting, rather than waiting for the timer.
const FLUSH_AT: usize = 50;
/// Longest button or link text kept as a click's name.
const MAX_NAME_CHARS: usize = 64;

/// One page's tracker.
#[derive(Debug)]
pub struct Tracker {
    config: Config,
    window: Window,
    user_id: Option<String>,
    /// DNT/GPC or a local host: decided once, at start.
    blocked_at_start: Option<Blocked>,
    buffer: RefCell<Buffer>,
    last_path: RefCell<Option<String>>,
    /// Where this page load came from, as the loader read it: `referrer` and the URL's
    /// `utm_*` tags, copied into each event (the server takes a visit's from its first).
    arrival: Object,
}

impl Tracker {
    /// A tracker for `config` on the page in `window`.
    pub fn new(config: Config, window: Window, arrival: Object) -> Rc<Self> {
        let visit = read_visit(&window);
        let blocked_at_start = blocked(
            &config,
            &Visit {
                opted_out: false,
                ..visit
            },
        );
        let user_id = if config.cookieless || blocked_at_start.is_some() {
            None
        } else {
            Some(stored_user_id(&window))
        };
        Rc::new(Self {
            config,
            user_id,
            blocked_at_start,
            buffer: RefCell::new(Buffer::default()),
            last_path: RefCell::new(None),
            arrival,
            window,
        })
    }

    /// Why nothing is sent, if so. The opt-out is read each time, so that opting out in
    /// one tab stops the others.
    pub fn blocked(&self) -> Option<Blocked> {
        if opted_out(&self.window) {
            return Some(Blocked::OptedOut);
        }
        self.blocked_at_start
    }

    /// The path as this site routes: the pathname, plus the hash when hash-routed.
    /// Query strings are left out: they often carry personal data.
    pub fn current_path(&self) -> String {
        let location = self.window.location();
        let mut path = location.pathname().unwrap_or_else(|_| "/".to_owned());
        if self.config.hash_routing {
            path.push_str(&location.hash().unwrap_or_default());
        }
        path
    }

    /// A page view, always.
    pub fn page_view(self: &Rc<Self>) {
        let path = self.current_path();
        self.last_path.replace(Some(path.clone()));
        self.record("page_view", Some(path), None);
    }

    /// A page view if the route changed: history calls that keep the path (a
    /// `replaceState` for a query string, say) are not new pages.
    pub fn navigated(self: &Rc<Self>) {
        let path = self.current_path();
        if self.last_path.borrow().as_deref() != Some(path.as_str()) {
            self.page_view();
        }
    }

    /// A custom event with optional properties (a plain object).
    pub fn track(self: &Rc<Self>, event_type: &str, props: &JsValue) {
        let props = if props.is_undefined() || props.is_null() {
            None
        } else if props.is_object() && !js_sys::Array::is_array(props) {
            Some(props.clone())
        } else {
            warn("beacon.track: props must be a plain object; event not sent");
            return;
        };
        self.record(event_type, Some(self.current_path()), props);
    }

    /// A click anywhere on the page: counted if it hit an element marked
    /// `data-beacon-click`, or a link to another site.
    pub fn click(self: &Rc<Self>, target: &JsValue) {
        let Some(element) = target.dyn_ref::<Element>() else {
            return;
        };
        let Ok(Some(hit)) = element.closest("[data-beacon-click],a[href]") else {
            return;
        };
        let props = Object::new();
        if let Some(name) = hit.get_attribute("data-beacon-click") {
            let name = if name.trim().is_empty() {
                hit.text_content().unwrap_or_default()
            } else {
                name
            };
            let name: String = name.trim().chars().take(MAX_NAME_CHARS).collect();
            set(&props, "name", &JsValue::from_str(&name));
        } else if let Some(link) = hit.dyn_ref::<HtmlAnchorElement>() {
            let here = self.window.location().host().unwrap_or_default();
            if !is_outbound(&link.protocol(), &link.host(), &here) {
                return;
            }
            set(&props, "outbound", &JsValue::from_str(&link.href()));
        }
        self.record("click", Some(self.current_path()), Some(props.into()));
    }

    /// Builds the event as a JS object and serializes it with `JSON.stringify`: the
    /// browser already has a JSON writer, and shipping serde's would triple the module.
    fn record(self: &Rc<Self>, event_type: &str, path: Option<String>, props: Option<JsValue>) {
        if self.blocked().is_some() {
            return;
        }
        let props_json = props
            .as_ref()
            .and_then(|p| JSON::stringify(p).ok()?.as_string());
        if let Err(e) = validate_fields(
            &self.config.site_id,
            event_type,
            path.as_deref(),
            self.user_id.as_deref(),
        )
        .and_then(|()| match (&props, &props_json) {
            (Some(p), Some(json)) => validate_props_size(
                Object::keys(&Object::from(p.clone())).length() as usize,
                json.len(),
            ),
            _ => Ok(()),
        }) {
            warn_about(
                "beacon: event not sent; the problem is in",
                refused_field(&e),
            );
            return;
        }
        let now_ms = js_sys::Date::now();
        let mut random = [0u8; 10];
        if !fill_random(&self.window, &mut random) {
            return;
        }
        let event = Object::new();
        let id = ids::event_id(now_ms as u64, random).to_string();
        set(&event, "event_id", &JsValue::from_str(&id));
        set(&event, "site_id", &JsValue::from_str(&self.config.site_id));
        set(&event, "event_type", &JsValue::from_str(event_type));
        if let Some(path) = path {
            set(&event, "path", &JsValue::from_str(&path));
        }
        if let Some(user_id) = &self.user_id {
            set(&event, "user_id", &JsValue::from_str(user_id));
        }
        Object::assign(&event, &self.arrival);
        // Epoch milliseconds, which the server reads as well as RFC 3339.
        set(&event, "timestamp", &JsValue::from_f64(now_ms.floor()));
        if let Some(props) = props {
            set(&event, "props", &props);
        }
        let Some(json) = JSON::stringify(&event).ok().and_then(|s| s.as_string()) else {
            return;
        };
        let waiting = {
            let mut buffer = self.buffer.borrow_mut();
            buffer.push(json);
            buffer.len()
        };
        if waiting >= FLUSH_AT {
            self.flush(false);
        }
    }

    /// Sends everything waiting. While the page stays, with `fetch` (events that fail
    /// come back to the buffer); when it is going away, with `sendBeacon`, which the
    /// browser delivers after the page is gone, and keepalive `fetch` if it refuses.
    pub fn flush(self: &Rc<Self>, closing: bool) {
        if self.blocked().is_some() {
            self.buffer.borrow_mut().clear();
            return;
        }
        let bodies = self.buffer.borrow_mut().take_bodies(self.config.cookieless);
        for body in bodies {
            if closing && self.send_beacon(&body.json) {
                continue;
            }
            self.post(body);
        }
    }

    /// `fetch` with keepalive, so that it outlives the page like `sendBeacon`. Events
    /// that fail for a reason that may pass (offline, 408, 429, 5xx) go back to the
    /// buffer for the next tick; their ids make a resend safe.
    fn post(self: &Rc<Self>, body: Body) {
        let init = RequestInit::new();
        init.set_method("POST");
        // A string body goes as `text/plain`: a "simple" request, so no CORS preflight.
        init.set_body(&JsValue::from_str(&body.json));
        init.set_mode(RequestMode::Cors);
        // web-sys has no stable setter for `keepalive`.
        set(&init, "keepalive", &JsValue::TRUE);
        let request = self
            .window
            .fetch_with_str_and_init(&self.config.endpoint, &init);
        let tracker = Rc::clone(self);
        // Called once, with a Response or, when offline, with the rejection's error;
        // `once_into_js` frees it after that call.
        let settled = Closure::once_into_js(move |answer: JsValue| {
            let status = answer.dyn_ref::<Response>().map_or(0, Response::status);
            if status == 0 || status == 408 || status == 429 || status >= 500 {
                tracker.buffer.borrow_mut().requeue(body.events);
            } else if !(200..300).contains(&status) {
                web_sys::console::warn_2(
                    &JsValue::from_str("beacon: the server refused a batch"),
                    &JsValue::from(status),
                );
            }
        });
        if let Ok(then) = Reflect::get(&request, &JsValue::from_str("then"))
            .and_then(|f| f.dyn_into::<js_sys::Function>())
        {
            let _ = then.call2(&request, &settled, &settled);
        }
    }

    fn send_beacon(&self, body: &str) -> bool {
        self.window
            .navigator()
            .send_beacon_with_opt_str(&self.config.endpoint, Some(body))
            .unwrap_or(false)
    }

    /// Stops sending for this visitor, now and on later visits.
    pub fn opt_out(&self) {
        if let Some(storage) = local_storage(&self.window) {
            let _ = storage.set_item(OPT_OUT_KEY, "1");
        }
        self.buffer.borrow_mut().clear();
    }

    /// Undoes [`Tracker::opt_out`].
    pub fn opt_in(&self) {
        if let Some(storage) = local_storage(&self.window) {
            let _ = storage.remove_item(OPT_OUT_KEY);
        }
    }

    /// Events waiting to be sent.
    pub fn pending(&self) -> usize {
        self.buffer.borrow().len()
    }

    /// The anonymous user id, if this page has one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// A link leaves the site when it is http(s) and points at another host.
pub fn is_outbound(link_protocol: &str, link_host: &str, page_host: &str) -> bool {
    matches!(link_protocol, "http:" | "https:") && !link_host.is_empty() && link_host != page_host
}

fn read_visit(window: &Window) -> Visit {
    let location = window.location();
    let navigator = window.navigator();
    // Read both through Reflect: Chromium leaves `doNotTrack` null, which web-sys's
    // String-typed getter would trap on, and `globalPrivacyControl` isn't in web-sys.
    let read =
        |name: &str| Reflect::get(&navigator, &JsValue::from_str(name)).unwrap_or(JsValue::NULL);
    let gpc = read("globalPrivacyControl").is_truthy();
    Visit {
        hostname: location.hostname().unwrap_or_default(),
        protocol: location.protocol().unwrap_or_default(),
        do_not_track: read("doNotTrack").as_string().is_some_and(|v| v == "1"),
        global_privacy_control: gpc,
        opted_out: opted_out(window),
    }
}

/// `localStorage`, unless the browser denies it (some private modes, sandboxed frames).
fn local_storage(window: &Window) -> Option<Storage> {
    window.local_storage().ok().flatten()
}

fn opted_out(window: &Window) -> bool {
    local_storage(window)
        .and_then(|s| s.get_item(OPT_OUT_KEY).ok().flatten())
        .is_some_and(|v| v == "1")
}

/// The id kept in `localStorage`, made on the first visit. Without storage the id lasts
/// for this page only.
fn stored_user_id(window: &Window) -> String {
    let storage = local_storage(window);
    if let Some(id) = storage
        .as_ref()
        .and_then(|s| s.get_item(USER_KEY).ok().flatten())
        .filter(|id| !id.is_empty() && id.len() <= 64)
    {
        return id;
    }
    let mut random = [0u8; 16];
    fill_random(window, &mut random);
    let id = ids::anonymous_user_id(random);
    if let Some(storage) = storage {
        let _ = storage.set_item(USER_KEY, &id);
    }
    id
}

fn fill_random(window: &Window, bytes: &mut [u8]) -> bool {
    window
        .crypto()
        .and_then(|c| c.get_random_values_with_u8_array(bytes))
        .is_ok()
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
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

/// A console warning for the site's developer; never an exception.
pub fn warn(message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(message));
}

fn warn_about(message: &str, detail: &str) {
    web_sys::console::warn_2(&JsValue::from_str(message), &JsValue::from_str(detail));
}
