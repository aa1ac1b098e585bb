//! Whatever a client sends, the answer is a 2xx or a JSON 4xx: never a panic, never a
//! 500. Property-based, over event and batch bodies and stats query strings, against
//! the real router on an embedded store; the number of cases is bounded so that the
//! suite stays quick (PROPTEST_CASES raises it).
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use beacon_server::{AppState, app};
use beacon_testkit::TestBackend;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

/// Any JSON value, with the field names and shapes events use turning up often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![
            Just("2026-11-30T12:00:00Z"),
            Just("+262142-12-31T00:00:00Z"),
            Just("page_view"),
            Just("/"),
            Just(r#"{"$oid":"x"}"#),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 8, |inner| {
        let key = prop_oneof![
            Just("site_id".to_owned()),
            Just("event_type".to_owned()),
            Just("path".to_owned()),
            Just("user_id".to_owned()),
            Just("timestamp".to_owned()),
            Just("event_id".to_owned()),
            Just("props".to_owned()),
            Just("events".to_owned()),
            Just("cookieless".to_owned()),
            ".{0,12}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A query string from the characters that matter in one.
fn query() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("site_id=s".to_owned()),
        Just("from=".to_owned()),
        Just("to=".to_owned()),
        Just("limit=".to_owned()),
        Just("event_type=".to_owned()),
        "[-+0-9:TZ.%&=a-z$\\[\\]]{0,24}",
    ];
    prop::collection::vec(part, 0..6).prop_map(|parts| parts.concat())
}

/// The router on an embedded store, and the runtime it runs on: one for all cases.
struct Target {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _backend: TestBackend,
}

fn target() -> &'static Target {
    static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let backend = TestBackend::embedded();
        let router = runtime.block_on(async {
            let config = beacon_testkit::server_config(backend.config.clone());
            let store = beacon_store::Store::open(config.worker.store.clone())
                .await
                .unwrap();
            app(
                AppState::new(store, &config).unwrap(),
                &config.sdk_dir,
                beacon_server::RateLimits::default(),
            )
        });
        Target {
            runtime,
            router,
            _backend: backend,
        }
    })
}

/// Sends `request` and checks the answer's status and shape.
fn check(request: Request<Body>) {
    let Target {
        runtime, router, ..
    } = target();
    let what = format!("{} {}", request.method(), request.uri());
    let (status, body) = runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, body)
    });
    assert!(
        status.is_success() || status.is_client_error(),
        "{what}: {status} {body:?}"
    );
    if status.is_client_error() {
        let json: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{what}: {status} is not JSON: {body:?}"));
        assert!(json["error"].is_string(), "{what}: {json}");
    }
}

fn post(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn events_and_batches_get_a_2xx_or_a_json_4xx(value in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let json = serde_json::to_vec(&value).unwrap();
        for path in ["/event", "/events"] {
            check(post(path, json.clone()));
            check(post(path, raw.clone()));
        }
        let wrapped = serde_json::to_vec(&serde_json::json!({"events": [value]})).unwrap();
        check(post("/events", wrapped));
    }

    #[test]
    fn stats_queries_get_a_2xx_or_a_json_4xx(q in query()) {
        let Ok(request) = Request::get(format!("/stats?{q}")).body(Body::empty()) else {
            return Ok(()); // not a URI a client could send
        };
        check(request);
    }
}
