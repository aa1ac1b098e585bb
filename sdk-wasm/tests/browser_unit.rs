//! The tracker in a real browser (headless Chromium through wasm-bindgen-test):
//! settings from a script tag, what is recorded, opt-out, ids in localStorage, and that
//! failed sends come back to the buffer.
//!
//! Run by `scripts/test`, or: `cargo test -p beacon-wasm --target wasm32-unknown-unknown`
//! with the wasm-bindgen test runner as the target's runner.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use beacon_wasm::{Beacon, start};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{Element, HtmlElement};

wasm_bindgen_test_configure!(run_in_browser);

fn document() -> web_sys::Document {
    web_sys::window().unwrap().document().unwrap()
}

fn storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

/// A `<script>` tag as a site would write it. The API points at a closed port: sends
/// fail, which is what the buffer tests want.
fn script(attrs: &[(&str, &str)]) -> Element {
    let script = document().create_element("script").unwrap();
    script
        .set_attribute("src", "http://127.0.0.1:9/sdk/beacon.js")
        .unwrap();
    for (name, value) in attrs {
        script.set_attribute(name, value).unwrap();
    }
    script
}

/// Tracking on this test page (served from 127.0.0.1), with no timer flush.
fn tracker(extra: &[(&str, &str)]) -> Beacon {
    let mut attrs = vec![
        ("data-site-id", "site-test"),
        ("data-allow-localhost", "true"),
        ("data-flush-ms", "600000"),
    ];
    attrs.extend_from_slice(extra);
    start(&script(&attrs), js_sys::Object::new()).unwrap_or_else(|_| panic!("start failed"))
}

fn element(html: &str) -> HtmlElement {
    let holder = document().create_element("div").unwrap();
    holder.set_inner_html(html);
    document().body().unwrap().append_child(&holder).unwrap();
    holder.first_element_child().unwrap().dyn_into().unwrap()
}

async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(promise).await.unwrap();
}

#[wasm_bindgen_test]
fn a_script_tag_without_a_site_id_is_refused_not_thrown() {
    let script = script(&[]);
    assert!(start(&script, js_sys::Object::new()).is_err());
}

#[wasm_bindgen_test]
fn start_records_a_page_view_and_custom_events_follow() {
    storage().clear().unwrap();
    let b = tracker(&[]);
    assert!(b.tracking());
    assert_eq!(b.pending(), 1, "the page view on start");
    let props = js_sys::Object::new();
    js_sys::Reflect::set(&props, &"plan".into(), &"pro".into()).unwrap();
    b.track("signup", props.into());
    b.track("plain", JsValue::UNDEFINED);
    assert_eq!(b.pending(), 3);
    // Props that aren't an object, or an empty type, are refused with a console warning.
    b.track("bad", JsValue::from(5));
    b.track("", JsValue::NULL);
    assert_eq!(b.pending(), 3);
}

#[wasm_bindgen_test]
fn marked_elements_and_outbound_links_count_as_clicks_others_do_not() {
    let b = tracker(&[]);
    let before = b.pending();
    let button = element(r#"<button data-beacon-click="cta"><span>Buy</span></button>"#);
    b.click(button.first_element_child().unwrap().into());
    assert_eq!(b.pending(), before + 1, "a click inside a marked element");
    b.click(element(r#"<a href="/about">About</a>"#).into());
    b.click(element("<p>text</p>").into());
    assert_eq!(b.pending(), before + 1, "internal links and plain elements");
    b.click(element(r#"<a href="https://example.org/x">Out</a>"#).into());
    assert_eq!(b.pending(), before + 2, "an outbound link");
    b.click(JsValue::NULL);
    assert_eq!(b.pending(), before + 2);
}

#[wasm_bindgen_test]
fn navigation_counts_only_when_the_route_changes() {
    let b = tracker(&[]);
    let history = web_sys::window().unwrap().history().unwrap();
    let start_path = b.current_path();
    let before = b.pending();
    b.navigated();
    assert_eq!(b.pending(), before, "same path");
    history
        .push_state_with_url(&JsValue::NULL, "", Some("/spa/next?q=secret"))
        .unwrap();
    b.navigated();
    assert_eq!(b.pending(), before + 1);
    assert_eq!(b.current_path(), "/spa/next", "no query string");
    history
        .replace_state_with_url(&JsValue::NULL, "", Some("/spa/next?q=other"))
        .unwrap();
    b.navigated();
    assert_eq!(
        b.pending(),
        before + 1,
        "a new query string is not a new page"
    );
    history
        .replace_state_with_url(&JsValue::NULL, "", Some(&start_path))
        .unwrap();
}

#[wasm_bindgen_test]
fn opting_out_drops_what_is_waiting_and_stops_everything() {
    storage().clear().unwrap();
    let b = tracker(&[]);
    assert!(b.pending() > 0);
    b.opt_out();
    assert!(!b.tracking());
    assert_eq!(b.pending(), 0);
    b.page_view();
    assert_eq!(b.pending(), 0);
    // Another page of the site sees the flag too.
    assert!(!tracker(&[]).tracking());
    b.opt_in();
    assert!(b.tracking());
    b.page_view();
    assert_eq!(b.pending(), 1);
}

#[wasm_bindgen_test]
fn localhost_is_skipped_unless_allowed() {
    let b = start(
        &script(&[("data-site-id", "s"), ("data-flush-ms", "600000")]),
        js_sys::Object::new(),
    )
    .unwrap_or_else(|_| panic!("start failed"));
    assert!(!b.tracking());
    assert_eq!(b.pending(), 0);
}

#[wasm_bindgen_test]
fn the_visitor_id_lives_in_local_storage_except_in_cookieless_mode() {
    storage().clear().unwrap();
    let first = tracker(&[]).user_id().unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(tracker(&[]).user_id().unwrap(), first, "the same visitor");
    assert_eq!(storage().get_item("beacon_uid").unwrap().unwrap(), first);

    storage().clear().unwrap();
    let cookieless = tracker(&[("data-cookieless", "")]);
    assert_eq!(cookieless.user_id(), None);
    assert_eq!(
        storage().get_item("beacon_uid").unwrap(),
        None,
        "nothing stored"
    );
}

#[wasm_bindgen_test]
async fn events_that_fail_to_send_come_back_for_the_next_try() {
    let b = tracker(&[]);
    b.track("one", JsValue::UNDEFINED);
    let waiting = b.pending();
    b.flush(false);
    assert_eq!(b.pending(), 0, "handed to fetch");
    for _ in 0..50 {
        if b.pending() == waiting {
            break;
        }
        sleep(100).await;
    }
    assert_eq!(
        b.pending(),
        waiting,
        "the server is unreachable: back in the buffer"
    );
}
