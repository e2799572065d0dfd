//! The `http` transport against a real upstream on 127.0.0.1, and its SSRF guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::Router as App;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use switchyard_core::{RejectionKind, find_cause, find_rejection};
use switchyard_router::{
    HttpTransport, RouteRow, Router, SsrfBlocked, UpstreamFailed, internal_reason,
};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt, service_fn};

async fn upstream() -> SocketAddr {
    let app = App::new()
        .route(
            "/bill",
            post(|headers: HeaderMap, body: Bytes| async move {
                let kind = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                format!("remote-billed:{}:{kind}", String::from_utf8_lossy(&body))
            }),
        )
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        )
        .route("/big", post(|| async { "x".repeat(10_000) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn call(router: &Router, name: &str, body: &'static str) -> Result<Bytes, BoxError> {
    router
        .clone()
        .oneshot((name, Bytes::from_static(body.as_bytes())))
        .await
}

fn kind(err: &BoxError) -> RejectionKind {
    find_rejection(&**err)
        .unwrap_or_else(|| panic!("not a rejection: {err}"))
        .kind()
}

#[tokio::test]
async fn posts_the_payload_to_an_allowed_internal_upstream() {
    let addr = upstream().await;
    let router = Router::new();
    router.register_transport("http", HttpTransport::new().allow_internal(true));
    router.reload(vec![
        RouteRow::new("billing", "http").with_endpoint(format!("http://{addr}/bill")),
        RouteRow::new("json", "http")
            .with_endpoint(format!("http://{addr}/bill"))
            .with_config(r#"{"transport": {"content_type": "application/json"}, "timeout": "5s"}"#),
        RouteRow::new("failing", "http").with_endpoint(format!("http://{addr}/fail")),
        RouteRow::new("big", "http")
            .with_endpoint(format!("http://{addr}/big"))
            .with_config(r#"{"transport": {"max_response_bytes": 1000}}"#),
        RouteRow::new("closed", "http").with_endpoint("http://127.0.0.1:1/nothing"),
    ]);
    assert_eq!(
        call(&router, "billing", "$100").await.unwrap(),
        "remote-billed:$100:application/octet-stream"
    );
    assert_eq!(
        call(&router, "json", "{}").await.unwrap(),
        "remote-billed:{}:application/json"
    );

    let err = call(&router, "failing", "").await.unwrap_err();
    let failed = find_cause::<UpstreamFailed>(&*err).expect("UpstreamFailed");
    assert_eq!(
        failed.upstream_status(),
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(kind(&err), RejectionKind::UpstreamFailed);
    assert_eq!(
        err.to_string(),
        "upstream of failing answered 500 Internal Server Error"
    );

    for name in ["big", "closed"] {
        let err = call(&router, name, "").await.unwrap_err();
        assert_eq!(kind(&err), RejectionKind::UpstreamFailed, "{name}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("upstream of {name} failed")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn names_resolving_to_internal_addresses_are_refused_at_connect_time() {
    let addr = upstream().await;
    // `localhost` passes the build-time check (it is a name) and is refused once resolved.
    let router = Router::new();
    router
        .reload(vec![RouteRow::new("billing", "http").with_endpoint(
            format!("http://localhost:{}/bill", addr.port()),
        )]);
    assert!(router.inspect("billing").unwrap().error.is_none());
    let err = call(&router, "billing", "$1").await.unwrap_err();
    let blocked = find_cause::<SsrfBlocked>(&*err).unwrap_or_else(|| panic!("not blocked: {err}"));
    assert_eq!(blocked.host(), "localhost");
    assert_eq!(kind(&err), RejectionKind::RouteUnavailable);

    // DNS rebinding: a name that resolves to a loopback address now (whatever it resolved to
    // when the route was built) is refused.
    let port = addr.port();
    let rebinding: switchyard_router::Resolver =
        BoxCloneSyncService::new(service_fn(move |_name| async move {
            Ok::<_, BoxError>(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ])
        }));
    let guarded = Router::new();
    guarded.register_transport(
        "http",
        HttpTransport::new().with_resolver(rebinding.clone()),
    );
    let row = RouteRow::new("billing", "http")
        .with_endpoint(format!("http://billing.example.com:{port}/bill"));
    guarded.reload(vec![row.clone()]);
    let err = call(&guarded, "billing", "$1").await.unwrap_err();
    assert_eq!(
        find_cause::<SsrfBlocked>(&*err).map(SsrfBlocked::host),
        Some("billing.example.com")
    );

    // The same resolver with internal targets allowed reaches the upstream.
    let allowed = Router::new();
    allowed.register_transport(
        "http",
        HttpTransport::new()
            .with_resolver(rebinding)
            .allow_internal(true),
    );
    allowed.reload(vec![row]);
    assert_eq!(
        call(&allowed, "billing", "$1").await.unwrap(),
        "remote-billed:$1:application/octet-stream"
    );
}

#[test]
fn internal_addresses_are_classified() {
    let internal = [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "::ffff:8.8.8.8",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "192.0.2.10",
        "198.51.100.7",
        "203.0.113.200",
        "::ffff:0:7f00:1",
    ];
    for ip in internal {
        assert!(
            internal_reason(ip.parse().unwrap()).is_some(),
            "{ip} should be internal"
        );
    }
    let public = [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "192.0.3.1",
        "203.0.114.1",
        "2606:4700::1111",
        "2001:4860::8888",
    ];
    for ip in public {
        assert_eq!(
            internal_reason(ip.parse().unwrap()),
            None,
            "{ip} should be public"
        );
    }
}
