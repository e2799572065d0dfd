//! The gateway on a real socket, with a real upstream, over a real SQLite file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusqlite::Connection;
use switchyard_cli::{Gateway, builtin_router};
use switchyard_router::{Admin, RouteRow, Router, SqliteSource, WatchHandle};
use tower::{BoxError, service_fn};

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `error.kind` of a JSON error body.
    fn kind(&self) -> String {
        self.json()["error"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
        token: Option<&str>,
    ) -> Reply {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (status, retry_after, content_type) = (
            response.status(),
            header("retry-after"),
            header("content-type"),
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            retry_after,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn post(&self, path: &str, body: &'static str) -> Reply {
        self.send("POST", path, body, None).await
    }
}

async fn listen(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A remote billing service on 127.0.0.1, with a failing and a slow route.
async fn upstream() -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/bill",
            post(|body: Bytes| async move {
                format!("remote-billed:{}", String::from_utf8_lossy(&body))
            }),
        )
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    listen(app).await
}

struct Harness {
    http: Http,
    router: Router,
    admin: Admin,
    path: std::path::PathBuf,
    _watch: WatchHandle,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A gateway over a fresh database holding `rows`, watched every 20 ms.
    async fn start(rows: Vec<RouteRow>, token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.db");
        let source = SqliteSource::open(&path)
            .unwrap()
            .poll_interval(Duration::from_millis(20));
        let admin = source.admin().unwrap();
        // Written as the shell would: unchecked, so tests can hold rows the admin refuses.
        let shell = switchyard_router::open(&path).unwrap();
        for row in rows {
            shell
                .execute(
                    "INSERT INTO routes (service_name, strategy, endpoint, config) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![row.service_name, row.strategy, row.endpoint, row.config],
                )
                .unwrap();
        }
        let router = builtin_router(true);
        router.register_local(
            "fragile",
            service_fn(|body: Bytes| async move {
                assert!(&body[..] != b"boom", "fragile cannot take a boom");
                Ok::<_, BoxError>(body)
            }),
        );
        router.reload_from(&source).await.unwrap();
        let watch = router.watch(source);
        let mut gateway = Gateway::new(router.clone()).with_max_body_bytes(1024);
        if let Some(token) = token {
            gateway = gateway.with_admin(admin.clone(), token);
        }
        let addr = listen(switchyard_cli::app(gateway)).await;
        Self {
            http: Http::new(addr),
            router,
            admin,
            path,
            _watch: watch,
            _dir: dir,
        }
    }

    fn shell(&self) -> Connection {
        switchyard_router::open(&self.path).unwrap()
    }

    /// Waits until the router has reloaded `n` more times (at most 5 s: a failure, not a wait).
    async fn reloaded(&self, mut reloads: tokio::sync::watch::Receiver<u64>) {
        tokio::time::timeout(Duration::from_secs(5), reloads.changed())
            .await
            .expect("the watcher reloads after a write")
            .unwrap();
    }
}

#[tokio::test]
async fn the_seed_story_through_http() {
    let h = Harness::start(switchyard_cli::seed_rows(), None).await;
    let reply = h.http.post("/billing", "$100").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "billed:$100")
    );
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/octet-stream")
    );

    let reloads = h.router.reloads();
    h.shell()
        .execute(
            "UPDATE routes SET strategy = 'noop' WHERE service_name = 'billing'",
            [],
        )
        .unwrap();
    h.reloaded(reloads).await;
    let reply = h.http.post("/billing", "$200").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::NO_CONTENT, "")
    );
    assert_eq!(h.http.post("/echo", "hello").await.body, "hello");
}

#[tokio::test]
async fn every_failure_has_its_status_and_a_json_error() {
    let up = upstream().await;
    let breaker = r#"{"circuit_breaker": {"trip": {"consecutive_failures": {"threshold": 1}}, "wait_in_open": "30s"}}"#;
    let h = Harness::start(
        vec![
            RouteRow::new("echo", "local"),
            RouteRow::new("payments", "http")
                .with_endpoint(format!("http://{up}/fail"))
                .with_config(breaker),
            RouteRow::new("ledger", "http").with_endpoint(format!("http://{up}/fail")),
            RouteRow::new("slow", "http")
                .with_endpoint(format!("http://{up}/slow"))
                .with_config(r#"{"timeout": "50ms"}"#),
            RouteRow::new("limited", "local").with_config(r#"{"rate_limit": {"rate": "1/m"}}"#),
            RouteRow::new("fragile", "local"),
            RouteRow::new("quic-thing", "quic"),
            RouteRow::new("misconfigured", "local")
                .with_config(r#"{"retry": {"max_attempts": 0}}"#),
            RouteRow::new("nowhere", "http").with_endpoint("not a url"),
            RouteRow::new("off", "noop"),
        ],
        None,
    )
    .await;
    // The route named `limited` has no local service: give it one.
    h.router.register_local(
        "limited",
        service_fn(|b: Bytes| async move { Ok::<_, BoxError>(b) }),
    );

    let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
        ("/nobody", "x", StatusCode::NOT_FOUND, "service_not_found"),
        ("/ledger", "x", StatusCode::BAD_GATEWAY, "upstream_failed"),
        ("/slow", "x", StatusCode::GATEWAY_TIMEOUT, "timeout"),
        (
            "/fragile",
            "boom",
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic",
        ),
        (
            "/quic-thing",
            "x",
            StatusCode::SERVICE_UNAVAILABLE,
            "route_unavailable",
        ),
        (
            "/misconfigured",
            "x",
            StatusCode::SERVICE_UNAVAILABLE,
            "route_unavailable",
        ),
        (
            "/nowhere",
            "x",
            StatusCode::SERVICE_UNAVAILABLE,
            "route_unavailable",
        ),
    ];
    for (path, body, status, kind) in cases {
        let reply = h.http.post(path, body).await;
        assert_eq!(
            (reply.status, reply.kind().as_str()),
            (status, kind),
            "{path}: {}",
            reply.body
        );
        assert_eq!(reply.json()["error"]["service"], &path[1..], "{path}");
        assert!(
            !reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    }
    assert!(
        h.http.post("/misconfigured", "").await.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry.max_attempts")
    );

    // The breaker: one failure opens it; then 503 with Retry-After and the seed's message.
    assert_eq!(
        h.http.post("/payments", "x").await.status,
        StatusCode::BAD_GATEWAY
    );
    let reply = h.http.post("/payments", "x").await;
    assert_eq!(
        (reply.status, reply.kind().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    assert_eq!(reply.json()["error"]["message"], "circuit open: payments");
    assert_eq!(reply.retry_after.as_deref(), Some("30"));

    // The rate limit: the first call passes, the second gets 429 with Retry-After.
    assert_eq!(h.http.post("/limited", "a").await.status, StatusCode::OK);
    let reply = h.http.post("/limited", "b").await;
    assert_eq!(
        (reply.status, reply.kind().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(
        reply
            .retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().unwrap() > 0)
    );

    // An oversized body: 413, and the service is not called.
    let big = "x".repeat(2048);
    let reply = h.http.send("POST", "/echo", big, None).await;
    assert_eq!(
        (reply.status, reply.kind().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Only POST dispatches.
    assert_eq!(
        h.http.send("GET", "/echo", "", None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // noop is 204 with an empty body.
    let reply = h.http.post("/off", "x").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::NO_CONTENT, "")
    );

    // And through all of it the good route kept serving.
    assert_eq!(h.http.post("/echo", "still").await.body, "still");
    assert_eq!(h.http.post("/fragile", "fine").await.body, "fine");
}

#[tokio::test]
async fn a_row_flips_billing_between_local_and_remote_while_requests_run() {
    let up = upstream().await;
    let h = Harness::start(switchyard_cli::seed_rows(), None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (local, remote) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (http, stop, local, remote) = (
            h.http.clone(),
            Arc::clone(&stop),
            Arc::clone(&local),
            Arc::clone(&remote),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let reply = http.post("/billing", "$1").await;
                match (reply.status, reply.body.as_str()) {
                    (StatusCode::OK, "billed:$1") => local.fetch_add(1, Ordering::SeqCst),
                    (StatusCode::OK, "remote-billed:$1") => remote.fetch_add(1, Ordering::SeqCst),
                    other => panic!("a request failed during the flip: {other:?}"),
                };
            }
        })
    };
    let shell = h.shell();
    for i in 0..6 {
        let reloads = h.router.reloads();
        if i % 2 == 0 {
            shell
                .execute(
                    "UPDATE routes SET strategy = 'http', endpoint = ?1 WHERE service_name = 'billing'",
                    [format!("http://{up}/bill")],
                )
                .unwrap();
        } else {
            shell
                .execute(
                    "UPDATE routes SET strategy = 'local' WHERE service_name = 'billing'",
                    [],
                )
                .unwrap();
        }
        h.reloaded(reloads).await;
        // Let some requests through on this side of the switch.
        let seen = local.load(Ordering::SeqCst) + remote.load(Ordering::SeqCst);
        while local.load(Ordering::SeqCst) + remote.load(Ordering::SeqCst) < seen + 5 {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    client.await.expect("no request failed");
    assert!(local.load(Ordering::SeqCst) >= 5 && remote.load(Ordering::SeqCst) >= 5);
}

#[tokio::test]
async fn a_reload_storm_fails_no_request_on_unchanged_routes() {
    let h = Harness::start(
        vec![
            RouteRow::new("billing", "local").with_config(r#"{"circuit_breaker": {}}"#),
            RouteRow::new("churn", "noop"),
        ],
        None,
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let client = {
        let (http, stop, served) = (h.http.clone(), Arc::clone(&stop), Arc::clone(&served));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let reply = http.post("/billing", "$1").await;
                assert_eq!(
                    (reply.status, reply.body.as_str()),
                    (StatusCode::OK, "billed:$1")
                );
                served.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let storm_started = h.router.status().last_reload;
    for i in 0..300 {
        let config = format!(r#"{{"timeout": "{}ms"}}"#, 100 + i);
        h.admin
            .upsert(
                RouteRow::new("churn", if i % 3 == 0 { "local" } else { "noop" })
                    .with_config(config),
            )
            .await
            .unwrap();
    }
    // Writes are applied in order: once a last, new route is live, the storm is.
    h.admin
        .upsert(RouteRow::new("storm-done", "noop"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.router.inspect("storm-done").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the storm's last write never went live"
        );
        tokio::task::yield_now().await;
    }
    let after = served.load(Ordering::SeqCst) + 20;
    while served.load(Ordering::SeqCst) < after {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::SeqCst);
    client
        .await
        .expect("no request on the unchanged route failed");
    assert_ne!(h.router.status().last_reload, storm_started);
    assert_eq!(h.router.inspect("churn").unwrap().strategy, "noop");
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_validates_what_it_writes() {
    let h = Harness::start(switchyard_cli::seed_rows(), Some("s3cret")).await;
    let http = &h.http;
    assert_eq!(
        http.send("GET", "/admin/routes", "", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.send("GET", "/admin/routes", "", Some("wrong"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.send("GET", "/admin/routes", "", Some("s3cre"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let reply = http.send("GET", "/admin/routes", "", Some("s3cret")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().as_array().unwrap().len(), 2);

    let reloads = h.router.reloads();
    let reply = http
        .send(
            "PUT",
            "/admin/routes/billing",
            r#"{"strategy": "noop"}"#,
            Some("s3cret"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["strategy"], "noop");
    h.reloaded(reloads).await;
    assert_eq!(
        http.post("/billing", "$1").await.status,
        StatusCode::NO_CONTENT
    );

    let bad = [
        (
            r#"{"strategy": "local", "config": {"retry": {"max_attempts": 0}}}"#,
            "retry.max_attempts",
        ),
        (r#"{"strategy": "Local Thing"}"#, "invalid strategy"),
        (
            r#"{"strategy": "local", "colour": "blue"}"#,
            "unknown field",
        ),
        ("not json", "invalid body"),
    ];
    for (body, says) in bad {
        let reply = http
            .send("PUT", "/admin/routes/billing", body, Some("s3cret"))
            .await;
        assert_eq!(
            (reply.status, reply.kind().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_route"),
            "{body}"
        );
        assert!(reply.body.contains(says), "{body}: {}", reply.body);
    }
    let reply = http
        .send(
            "PUT",
            "/admin/routes/bad%20name",
            r#"{"strategy": "local"}"#,
            Some("s3cret"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Nothing bad was written.
    assert_eq!(h.admin.get("billing").await.unwrap().strategy, "noop");

    assert_eq!(
        http.send("GET", "/admin/routes/nobody", "", Some("s3cret"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.send("DELETE", "/admin/routes/echo", "", Some("s3cret"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        http.send("DELETE", "/admin/routes/echo", "", Some("s3cret"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn without_a_token_there_is_no_admin_api() {
    let h = Harness::start(switchyard_cli::seed_rows(), None).await;
    let reply = h
        .http
        .send("GET", "/admin/routes", "", Some("anything"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = h
        .http
        .send("GET", "/admin/routes/billing", "", Some("anything"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_pages_list_routes_strategies_breakers_and_errors() {
    let h = Harness::start(
        vec![
            RouteRow::new("billing", "local").with_config(r#"{"circuit_breaker": {}}"#),
            RouteRow::new("ghost", "quic"),
        ],
        None,
    )
    .await;
    // A name the admin would refuse, written from the shell.
    let reloads = h.router.reloads();
    h.shell()
        .execute(
            "INSERT INTO routes (service_name, strategy) VALUES ('<script>', 'local')",
            [],
        )
        .unwrap();
    h.reloaded(reloads).await;
    assert_eq!(h.http.send("GET", "/healthz", "", None).await.body, "ok\n");

    let status = h.http.send("GET", "/status", "", None).await.json();
    assert_eq!(status["router"]["routes"], 3);
    assert_eq!(status["router"]["broken"], 2);
    let billing = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "billing")
        .unwrap();
    assert_eq!(billing["breaker"], "closed");
    assert_eq!(billing["strategy"], "local");

    let page = h.http.send("GET", "/", "", None).await;
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    for needle in [
        "billing",
        "closed",
        "ghost",
        "no transport registered for strategy `quic`",
        "&lt;script&gt;",
    ] {
        assert!(page.body.contains(needle), "the page lacks {needle:?}");
    }
    assert!(!page.body.contains("<script>"));
}
