//! Credentials on routes (`transport.auth`): each method arrives at a real upstream as its
//! header, secrets come from the environment when named so, every missing credential is its
//! `AUTH_11xx` error, and no secret shows in status, errors or debug output.

use std::net::SocketAddr;

use axum::Router as App;
use axum::http::HeaderMap;
use axum::routing::post;
use bytes::Bytes;
use switchyard_core::find_cause;
use switchyard_router::{FactoryFailed, HttpTransport, RouteRow, Router};
use tower::{BoxError, ServiceExt};

/// An upstream answering with the credential headers it received.
async fn upstream() -> SocketAddr {
    let app = App::new().route(
        "/echo",
        post(|headers: HeaderMap| async move {
            let get = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            format!(
                "authorization={} x-api-key={} x-tenant={}",
                get("authorization"),
                get("x-api-key"),
                get("x-tenant")
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn router() -> Router {
    let router = Router::new();
    router.register_transport("http", HttpTransport::new().allow_internal(true));
    router
}

fn route(name: &str, addr: SocketAddr, auth: &serde_json::Value) -> RouteRow {
    RouteRow::new(name, "http")
        .with_endpoint(format!("http://{addr}/echo"))
        .with_config(serde_json::json!({ "transport": { "auth": auth } }).to_string())
}

async fn call(router: &Router, name: &str) -> Result<String, BoxError> {
    let answer = router
        .clone()
        .oneshot((name, Bytes::from_static(b"x")))
        .await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn each_method_arrives_as_its_header() {
    let addr = upstream().await;
    let router = router();
    // A variable every process has, standing for a secret kept in the environment.
    let path = std::env::var("PATH").expect("PATH is set");
    router.reload(vec![
        route("none", addr, &serde_json::json!({ "method": "none" })),
        route("key", addr, &serde_json::json!({ "method": "api_key", "api_key": "k-123" })),
        route("bearer", addr, &serde_json::json!({ "method": "bearer", "token": "t-456" })),
        route(
            "bearer-env",
            addr,
            &serde_json::json!({ "method": "bearer", "token_env": "PATH" }),
        ),
        route(
            "basic",
            addr,
            &serde_json::json!({ "method": "basic", "username": "ann", "password": "s3cret" }),
        ),
        route(
            "custom",
            addr,
            &serde_json::json!({ "method": "custom", "headers": { "x-tenant": "acme", "authorization": "Sig abc" } }),
        ),
    ]);
    let cases = [
        ("none", "authorization=- x-api-key=- x-tenant=-".to_owned()),
        (
            "key",
            "authorization=- x-api-key=k-123 x-tenant=-".to_owned(),
        ),
        (
            "bearer",
            "authorization=Bearer t-456 x-api-key=- x-tenant=-".to_owned(),
        ),
        (
            "bearer-env",
            format!("authorization=Bearer {path} x-api-key=- x-tenant=-"),
        ),
        // base64("ann:s3cret")
        (
            "basic",
            "authorization=Basic YW5uOnMzY3JldA== x-api-key=- x-tenant=-".to_owned(),
        ),
        (
            "custom",
            "authorization=Sig abc x-api-key=- x-tenant=acme".to_owned(),
        ),
    ];
    for (name, expected) in cases {
        assert_eq!(call(&router, name).await.expect(name), expected, "{name}");
    }
}

#[tokio::test]
async fn every_missing_credential_is_its_code_and_breaks_only_its_route() {
    let addr = upstream().await;
    let router = router();
    let unset = "SWITCHYARD_TEST_SURELY_UNSET_1F7A";
    assert!(std::env::var_os(unset).is_none());
    let cases = [
        (
            "k1",
            serde_json::json!({ "method": "api_key" }),
            "AUTH_1101 invalid `transport.auth.api_key`",
        ),
        (
            "k2",
            serde_json::json!({ "method": "api_key", "api_key": "" }),
            "AUTH_1101",
        ),
        (
            "t1",
            serde_json::json!({ "method": "bearer" }),
            "AUTH_1102 invalid `transport.auth.token`",
        ),
        (
            "t2",
            serde_json::json!({ "method": "bearer", "token_env": unset }),
            "AUTH_1102 invalid `transport.auth.token_env`",
        ),
        (
            "b1",
            serde_json::json!({ "method": "basic", "password": "p" }),
            "AUTH_1103 invalid `transport.auth.username`",
        ),
        (
            "b2",
            serde_json::json!({ "method": "basic", "username": "ann" }),
            "AUTH_1103 invalid `transport.auth.password`",
        ),
        (
            "m1",
            serde_json::json!({ "method": "mtls", "key_file": "/k" }),
            "AUTH_1104 invalid `transport.auth.cert_file`",
        ),
        (
            "m2",
            serde_json::json!({ "method": "mtls", "cert_file": "/c" }),
            "AUTH_1104 invalid `transport.auth.key_file`",
        ),
        (
            "u1",
            serde_json::json!({ "method": "kerberos" }),
            "AUTH_1105 invalid `transport.auth.method`",
        ),
        (
            "c1",
            serde_json::json!({ "method": "custom" }),
            "AUTH_1105 invalid `transport.auth.headers`",
        ),
    ];
    let mut rows: Vec<RouteRow> = cases.iter().map(|(n, a, _)| route(n, addr, a)).collect();
    rows.push(route(
        "ok",
        addr,
        &serde_json::json!({ "method": "bearer", "token": "t" }),
    ));
    router.reload(rows);
    for (name, _, says) in &cases {
        let err = call(&router, name).await.expect_err(name);
        assert!(
            find_cause::<FactoryFailed>(&*err).is_some(),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
    assert!(
        call(&router, "ok").await.is_ok(),
        "the other routes keep serving"
    );
    // Status names each broken route's error, with its code.
    let broken: Vec<_> = router
        .services()
        .into_iter()
        .filter_map(|s| s.error.map(|e| (s.name, e)))
        .collect();
    assert_eq!(broken.len(), cases.len(), "{broken:?}");
    assert!(
        broken.iter().all(|(_, e)| e.contains("AUTH_11")),
        "{broken:?}"
    );
}

#[tokio::test]
async fn secrets_never_show_in_status_errors_or_debug_output() {
    let addr = upstream().await;
    let router = router();
    router.reload(vec![
        route("key", addr, &serde_json::json!({ "method": "api_key", "api_key": "SECRET-KEY-1" })),
        route(
            "basic",
            addr,
            &serde_json::json!({ "method": "basic", "username": "ann", "password": "SECRET-PW-2" }),
        ),
        // Broken by its own bad header value: the error names the field, not the value.
        route(
            "bad",
            addr,
            &serde_json::json!({ "method": "bearer", "token": "SECRET-TOKEN-3\n" }),
        ),
        RouteRow::new("down", "http")
            .with_endpoint("http://127.0.0.1:1/echo")
            .with_config(
                serde_json::json!({ "transport": { "auth": { "method": "bearer", "token": "SECRET-TOKEN-4" } } })
                    .to_string(),
            ),
    ]);
    assert!(call(&router, "key").await.is_ok());
    let bad = call(&router, "bad").await.expect_err("broken");
    let down = call(&router, "down").await.expect_err("refused");
    let seen = format!(
        "{bad} {bad:?} {down} {down:?} {:?} {:?} {:?} {}",
        router.services(),
        router.inspect("key"),
        router.status(),
        serde_json::to_string(&router.services()).unwrap()
    );
    for secret in [
        "SECRET-KEY-1",
        "SECRET-PW-2",
        "SECRET-TOKEN-3",
        "SECRET-TOKEN-4",
    ] {
        assert!(!seen.contains(secret), "{secret} leaked: {seen}");
    }
    assert!(bad.to_string().contains("transport.auth.token"), "{bad}");
}

#[tokio::test]
async fn a_wrongly_typed_secret_is_not_repeated_in_the_routes_error() {
    let addr = upstream().await;
    let router = router();
    router.reload(vec![
        route(
            "number",
            addr,
            &serde_json::json!({ "method": "bearer", "token": 987_654_321 }),
        ),
        RouteRow::new("string", "http")
            .with_endpoint(format!("http://{addr}/echo"))
            .with_config(r#"{"transport": {"auth": "Bearer sk_live_SECRET"}}"#),
    ]);
    for (name, secret, field) in [
        ("number", "987654321", "transport.auth.token"),
        ("string", "sk_live_SECRET", "transport.auth"),
    ] {
        let err = call(&router, name).await.expect_err(name);
        let seen = format!("{err} {err:?} {:?}", router.services());
        assert!(!seen.contains(secret), "{name}: {seen}");
        assert!(err.to_string().contains(field), "{name}: {err}");
        assert!(err.to_string().contains("not repeated"), "{name}: {err}");
    }
}

#[tokio::test]
async fn header_credentials_over_plain_http_need_a_trusted_network() {
    // The guard on (no internal targets): a bearer token to an http:// endpoint would travel
    // in clear, so the route is refused when it is built (nothing is sent).
    let router = Router::new();
    router.reload(vec![
        RouteRow::new("clear", "http")
            .with_endpoint("http://billing.example.com/charge")
            .with_config(
                serde_json::json!({ "transport": { "auth": { "method": "bearer", "token": "t" } } })
                    .to_string(),
            ),
        RouteRow::new("two-cas", "http")
            .with_endpoint("https://billing.example.com/charge")
            .with_config(
                serde_json::json!({ "transport": {
                    "tls": { "ca_file": "/etc/a.pem" },
                    "auth": { "method": "mtls", "cert_file": "/c", "key_file": "/k", "ca_file": "/etc/b.pem" },
                } })
                .to_string(),
            ),
        RouteRow::new("framing", "http")
            .with_endpoint("https://billing.example.com/charge")
            .with_config(
                serde_json::json!({ "transport": { "auth": { "method": "custom", "headers": { "Host": "evil.example" } } } })
                    .to_string(),
            ),
    ]);
    let err = call(&router, "clear").await.expect_err("refused");
    assert!(find_cause::<FactoryFailed>(&*err).is_some(), "{err}");
    assert!(err.to_string().contains("would travel in clear"), "{err}");
    let err = call(&router, "two-cas").await.expect_err("refused");
    assert!(
        err.to_string().contains("invalid `transport.auth.ca_file`"),
        "{err}"
    );
    let err = call(&router, "framing").await.expect_err("refused");
    assert!(
        err.to_string()
            .contains("AUTH_1105 invalid `transport.auth.headers.Host`"),
        "{err}"
    );
}
