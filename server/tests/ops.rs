//! What operators rely on: binaries that explain themselves, logs for shippers, health
//! for orchestrators, Prometheus metrics and the API's description.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use beacon_testkit::TestBackend;
use common::{TestApp, config};
use tokio::io::{AsyncBufReadExt, BufReader};

#[test]
fn the_binary_lists_every_setting_and_its_version() {
    let bin = env!("CARGO_BIN_EXE_beacon-server");
    let settings = [
        "PORT",
        "MONGO_URL",
        "ADMIN_TOKEN",
        "TRUST_PROXY",
        "LOG_FORMAT",
        "METRICS_PORT",
        "METRICS_TOKEN",
        "BATCH_SIZE",
        "QUEUE_MAX_EVENTS",
    ];
    beacon_testkit::assert_explains_itself(bin, &settings);
}

/// With `LOG_FORMAT=json`, every line the server logs is one JSON object.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let data = tempfile::tempdir().unwrap();
    let port = beacon_testkit::free_port();
    let mut server = common::server_binary(data.path(), port)
        .env("LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let object: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                object["timestamp"].is_string() && object["level"].is_string(),
                "{line}"
            );
            let listening = object["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Beacon listening on"));
            seen.push(object);
            if listening {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no listening line in {seen:?}");
    server.kill().await.unwrap();
}

/// A full queue's `503`s, one per request under a flood, add no log lines: they are
/// counted in the metrics.
#[tokio::test]
async fn a_full_queue_refuses_without_a_log_line_per_request() {
    let data = tempfile::tempdir().unwrap();
    let port = beacon_testkit::free_port();
    let mut server = common::server_binary(data.path(), port)
        .env("RUN_WORKER", "0")
        .env("QUEUE_MAX_EVENTS", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let event = serde_json::json!({"site_id": "s", "event_type": "page_view"});
    let mut refused = 0;
    for _ in 0..200 {
        match http.post(format!("{url}/event")).json(&event).send().await {
            Ok(r) if r.status() == 503 => refused += 1,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await, // not up yet
        }
        if refused == 20 {
            break;
        }
    }
    assert_eq!(refused, 20);
    server.kill().await.unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut logged = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        logged.push(line);
    }
    assert!(logged.len() < 10, "a line per refused request: {logged:#?}");
}

/// With `METRICS_PORT`, `/metrics` leaves the public router for a port of its own;
/// with `METRICS_TOKEN`, it asks for the token.
#[tokio::test]
async fn metrics_can_move_off_the_public_port_behind_a_token() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    let port = beacon_testkit::free_port();
    c.worker.observe.metrics_port = Some(port);
    c.worker.observe.metrics_token = Some("scrape-secret".to_owned());
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    assert_eq!(app.get("/metrics").await.0, 404);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let refused = app.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("scrape-secreT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = common::scrape(&app.http, &url, Some("scrape-secret")).await;
    assert!(metrics.contains_key("beacon_queue_depth"), "{metrics:?}");
    app.stop().await;
}

/// Every `"$ref"` in `value`.
fn references<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("$ref", Some(reference)) => found.push(reference),
                    _ => references(v, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

/// `/openapi.json` is a valid OpenAPI 3.1 description of every route the server has,
/// and every route it describes is served; `/docs` shows them all.
#[tokio::test]
async fn the_openapi_description_covers_every_route_and_validates() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert_eq!(spec.validate_version().unwrap().to_string(), "3.1.0");
    let description: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Every reference resolves.
    let mut found = Vec::new();
    references(&description, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        assert!(
            description.pointer(pointer).is_some(),
            "{reference} resolves"
        );
    }
    // Every operation has an id, a tag and answers, and its references resolve.
    let operations: Vec<_> = spec.operations().collect();
    for (path, method, operation) in &operations {
        assert!(
            operation.operation_id.is_some() && !operation.tags.is_empty(),
            "{method} {path}"
        );
        assert!(!operation.responses(&spec).is_empty(), "{method} {path}");
        for response in operation.responses(&spec).values() {
            for media in response.content.values() {
                if let Some(schema) = &media.schema {
                    schema
                        .resolve(&spec)
                        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                }
            }
        }
        if let Some(body) = operation.request_body(&spec).unwrap() {
            for media in body.content.values() {
                if let Some(schema) = &media.schema {
                    schema.resolve(&spec).unwrap();
                }
            }
        }
    }
    // Every route the server has is described. The router is built from the same route
    // lists as the description, so this list guards against a route left out of both
    // lists or added beside them.
    let served = [
        ("POST", "/event"),
        ("POST", "/events"),
        ("GET", "/stats"),
        ("POST", "/api/v2/query"),
        ("POST", "/api/sites"),
        ("GET", "/api/sites"),
        ("GET", "/api/sites/{site_id}"),
        ("PATCH", "/api/sites/{site_id}"),
        ("DELETE", "/api/sites/{site_id}"),
        ("POST", "/api/sites/{site_id}/keys"),
        ("GET", "/api/sites/{site_id}/keys"),
        ("DELETE", "/api/sites/{site_id}/keys/{key_id}"),
        ("DELETE", "/api/sites/{site_id}/users/{user_id}"),
        ("GET", "/api/sites/{site_id}/export"),
        ("GET", "/health"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/sdk/{file}"),
        ("GET", "/api/v2/sites"),
        ("GET", "/"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/dashboard.css"),
        ("GET", "/dashboard/dashboard.js"),
    ];
    let described: Vec<(String, String)> = operations
        .iter()
        .map(|(path, method, _)| (method.as_str().to_owned(), path.clone()))
        .collect();
    for (method, path) in served {
        assert!(
            described.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is described"
        );
    }
    assert_eq!(described.len(), served.len(), "{described:?}");
    // And every described route is served: no answer from the fallback, nor a 405.
    for (method, path) in &described {
        let concrete = path
            .replace("{site_id}", "s")
            .replace("{key_id}", "k")
            .replace("{user_id}", "u")
            .replace("{file}", "beacon.js");
        let request = app
            .http
            .request(method.parse().unwrap(), app.url(&concrete))
            .header("content-type", "application/json")
            .body("{}");
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !body.contains("no route for"),
            "{method} {path}: {status} {body}"
        );
    }
    // The reference page lists every path, and comes whole from the binary.
    let (status, page) = (
        app.http
            .get(app.url("/docs"))
            .send()
            .await
            .unwrap()
            .status(),
        app.http
            .get(app.url("/docs"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(status, 200);
    for (_, path) in &described {
        assert!(page.contains(path.as_str()), "{path} on /docs");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from other hosts"
    );
    app.stop().await;
}
