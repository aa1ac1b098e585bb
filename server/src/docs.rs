//! `/docs`: the API reference as one page, rendered on the server from the description.
//!
//! Hand-written rather than a UI crate (utoipa-swagger-ui, -redoc, -scalar): those load
//! their scripts from other hosts or download them while building, and this page must
//! come whole from the binary, with nothing fetched elsewhere. A page of plain HTML
//! needs no script at all.

use std::fmt::Write;

use serde_json::Value;
use utoipa::openapi::OpenApi;

const STYLE: &str = "
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #fff; --code: #f6f8fa; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --bg: #0d1117; --code: #161b22; --accent: #4493f8; } }
body { font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); max-width: 60rem; margin: 0 auto; padding: 1.5rem; }
h1 { margin-bottom: .25rem; } h2 { border-bottom: 1px solid var(--line); padding-bottom: .3rem; margin-top: 2.5rem; }
section.op { border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; margin: 1rem 0; }
.method { display: inline-block; min-width: 4.5rem; font-weight: 700; font-family: ui-monospace, monospace; color: var(--accent); }
code, .path { font-family: ui-monospace, monospace; background: var(--code); padding: 0 .25rem; border-radius: 4px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; } td, th { text-align: left; border-top: 1px solid var(--line); padding: .3rem .5rem; vertical-align: top; }
.muted { color: var(--muted); } a { color: var(--accent); } nav a { margin-right: 1rem; }
";

/// The page for `api`.
pub fn render(api: &OpenApi) -> String {
    // A description built from static types always serializes.
    let api = serde_json::to_value(api).unwrap_or_default();
    let mut page = String::new();
    let title = text(&api["info"]["title"]);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} API</title><style>{STYLE}</style></head><body>\
         <h1>{title} API <span class=\"muted\">{}</span></h1><p>{}</p>\
         <p class=\"muted\">OpenAPI {}: <a href=\"/openapi.json\">/openapi.json</a></p><nav>",
        text(&api["info"]["version"]),
        text(&api["info"]["description"]),
        text(&api["openapi"]),
    );
    let tags: Vec<&Value> = api["tags"]
        .as_array()
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    for tag in &tags {
        let name = text(&tag["name"]);
        let _ = write!(page, "<a href=\"#{name}\">{name}</a>");
    }
    page.push_str("<a href=\"#schemas\">schemas</a></nav>");
    for tag in &tags {
        let name = text(&tag["name"]);
        let _ = write!(
            page,
            "<h2 id=\"{name}\">{name}</h2><p class=\"muted\">{}</p>",
            text(&tag["description"])
        );
        for (path, item) in api["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let tagged = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| text(t) == name));
                if tagged {
                    operation(&mut page, method, path, op);
                }
            }
        }
    }
    page.push_str("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in api["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        schema_section(&mut page, name, schema);
    }
    page.push_str("</body></html>");
    page
}

fn operation(page: &mut String, method: &str, path: &str, op: &Value) {
    let _ = write!(
        page,
        "<section class=\"op\"><div><span class=\"method\">{}</span> <span class=\"path\">{}</span></div>",
        escape(&method.to_uppercase()),
        escape(path)
    );
    for part in ["summary", "description"] {
        if let Some(t) = op[part].as_str() {
            let _ = write!(page, "<p>{}</p>", prose(t));
        }
    }
    if let Some(security) = op["security"].as_array() {
        let open = security
            .iter()
            .any(|s| s.as_object().is_some_and(|o| o.is_empty()));
        let needs = if open {
            "a key (<code>Authorization: Bearer</code>) when <code>ADMIN_TOKEN</code> is set"
        } else {
            "the admin token (<code>Authorization: Bearer</code>)"
        };
        let _ = write!(page, "<p class=\"muted\">Needs {needs}.</p>");
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        page.push_str("<table><tr><th>Parameter</th><th>In</th><th>Type</th><th>About</th></tr>");
        for p in params {
            let required = if p["required"].as_bool() == Some(true) {
                " (required)"
            } else {
                ""
            };
            let _ = write!(
                page,
                "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&p["name"]),
                text(&p["in"]),
                type_of(&p["schema"]),
                prose(p["description"].as_str().unwrap_or_default()),
            );
        }
        page.push_str("</table>");
    }
    if let Some((kind, body)) = op["requestBody"]["content"]
        .as_object()
        .and_then(|c| c.iter().next())
    {
        let _ = write!(
            page,
            "<p>Body ({}): {} <span class=\"muted\">{}</span></p>",
            escape(kind),
            type_of(&body["schema"]),
            prose(
                op["requestBody"]["description"]
                    .as_str()
                    .unwrap_or_default()
            ),
        );
    }
    page.push_str("<table><tr><th>Status</th><th>Answer</th><th>Body</th></tr>");
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let body = response["content"]
            .as_object()
            .and_then(|c| c.values().next())
            .map(|c| type_of(&c["schema"]))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{body}</td></tr>",
            escape(status),
            prose(response["description"].as_str().unwrap_or_default()),
        );
    }
    page.push_str("</table></section>");
}

fn schema_section(page: &mut String, name: &str, schema: &Value) {
    let name = escape(name);
    let _ = write!(
        page,
        "<section class=\"op\" id=\"schema-{name}\"><strong>{name}</strong> <span class=\"muted\">{}</span>",
        text(&schema["description"])
    );
    if let Some(values) = schema["enum"].as_array() {
        let list: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", text(v)))
            .collect();
        let _ = write!(page, "<p>One of {}</p>", list.join(", "));
    }
    if let Some(properties) = schema["properties"].as_object() {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        page.push_str("<table><tr><th>Field</th><th>Type</th><th>About</th></tr>");
        for (field, property) in properties {
            let mark = if required.contains(&field.as_str()) {
                " (required)"
            } else {
                ""
            };
            let _ = write!(
                page,
                "<tr><td><code>{}</code>{mark}</td><td>{}</td><td>{}</td></tr>",
                escape(field),
                type_of(property),
                prose(property["description"].as_str().unwrap_or_default()),
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</section>");
}

/// A schema's type, in a few words, linking to named schemas.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = escape(reference.rsplit('/').next().unwrap_or(reference));
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    for combined in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema[combined].as_array() {
            let parts: Vec<String> = options.iter().map(type_of).collect();
            return parts.join(" or ");
        }
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds.iter().map(text).collect::<Vec<_>>().join(" or "),
        other => text(other),
    };
    if kind.starts_with("array") {
        return format!("array of {}", type_of(&schema["items"]));
    }
    if kind.is_empty() {
        "any".to_owned()
    } else {
        kind
    }
}

/// Text with `code` spans, as the doc comments write them.
fn prose(s: &str) -> String {
    escape(s)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
