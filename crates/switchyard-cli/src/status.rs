//! The status pages: `/status` as JSON and `/` as HTML.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use switchyard_router::ServiceInfo;

use crate::gateway::Gateway;

pub(crate) async fn status_json(State(gateway): State<Gateway>) -> Response {
    axum::Json(json!({
        "router": gateway.router.status(),
        "services": gateway.router.services(),
        "tls": gateway.tls.as_ref().map(|tls| tls.status()),
    }))
    .into_response()
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) async fn status_page(State(gateway): State<Gateway>) -> Html<String> {
    let status = gateway.router.status();
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         .err{color:#b00}</style></head><body><h1>switchyard</h1>",
    );
    let _ = write!(
        page,
        "<p>{} routes, {} local-only services, {} broken.",
        status.routes, status.local_only, status.broken
    );
    if let Some(error) = &status.last_error {
        let _ = write!(
            page,
            " <span class=\"err\">Last reload failed: {}</span>",
            escape(error)
        );
    }
    page.push_str(
        "</p><table><tr><th>service</th><th>strategy</th><th>endpoint</th><th>local</th>\
         <th>breaker</th><th>error</th></tr>",
    );
    for ServiceInfo {
        name,
        strategy,
        endpoint,
        has_local,
        breaker,
        error,
        rejected_files,
        last_call_error,
        ..
    } in gateway.router.services()
    {
        let rejected = rejected_files.map(|why| format!("new credential files not taken: {why}"));
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            escape(&name),
            escape(&strategy),
            escape(endpoint.as_deref().unwrap_or("")),
            if has_local { "yes" } else { "no" },
            breaker.map_or("", |b| b.as_str()),
            escape(
                error
                    .or(rejected)
                    .or(last_call_error)
                    .as_deref()
                    .unwrap_or("")
            ),
        );
    }
    page.push_str("</table></body></html>\n");
    Html(page)
}
