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
    builds: Arc<AtomicUsize>,
    path: std::path::PathBuf,
    _watch: WatchHandle,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A gateway over a fresh database holding `rows`, watched every 20 ms.
    async fn start(rows: Vec<RouteRow>, token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.db");
        // Rows written as the shell would (unchecked, so tests can hold rows the admin refuses),
        // before the source opens: its watcher starts from them.
        let mut shell = switchyard_router::sqlite::open(&path).unwrap();
        switchyard_router::sqlite::init(&mut shell).unwrap();
        for row in rows {
            shell
                .execute(
                    "INSERT INTO routes (service_name, strategy, endpoint, config) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![row.service_name, row.strategy, row.endpoint, row.config],
                )
                .unwrap();
        }
        let source = SqliteSource::open(&path)
            .unwrap()
            .poll_interval(Duration::from_millis(20));
        let admin = source.admin().unwrap();
        let router = builtin_router(true);
        // `counted`: answers like billing, and counts how many times a route of it was built.
        let builds = Arc::new(AtomicUsize::new(0));
        router.register_transport("counted", {
            let builds = Arc::clone(&builds);
            move |_: &switchyard_router::RouteSpec<'_>| {
                builds.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(tower::util::BoxCloneSyncService::new(service_fn(
                    |body: Bytes| async move {
                        let mut billed = b"billed:".to_vec();
                        billed.extend_from_slice(&body);
                        Ok::<_, BoxError>(Bytes::from(billed))
                    },
                )))
            }
        });
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
            builds,
            path,
            _watch: watch,
            _dir: dir,
        }
    }

    fn shell(&self) -> Connection {
        switchyard_router::sqlite::open(&self.path).unwrap()
    }

    /// Waits until `live` holds of the router, checking after each reload. The 5 s bound
    /// only turns a change that never goes live into a failure.
    async fn until(&self, what: &str, live: impl Fn(&Router) -> bool) {
        let mut reloads = self.router.reloads();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !live(&self.router) {
            tokio::time::timeout_at(deadline, reloads.changed())
                .await
                .unwrap_or_else(|_| panic!("{what} never went live"))
                .unwrap();
        }
    }

    fn strategy_is(name: &'static str, strategy: &'static str) -> impl Fn(&Router) -> bool {
        move |router| router.inspect(name).is_some_and(|s| s.strategy == strategy)
    }
}

/// Waits until `count` reaches `target`, failing if `client` stopped (it panicked) or after 5 s.
async fn progress(count: &AtomicUsize, target: usize, client: &tokio::task::JoinHandle<()>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count.load(Ordering::SeqCst) < target {
        assert!(
            !client.is_finished(),
            "the client stopped: a request failed"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client made no progress"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
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

    h.shell()
        .execute(
            "UPDATE routes SET strategy = 'noop' WHERE service_name = 'billing'",
            [],
        )
        .unwrap();
    h.until("billing → noop", Harness::strategy_is("billing", "noop"))
        .await;
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

    // The breaker: one failure opens it; then 503 with Retry-After and the documented message.
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
    let total = Arc::new(AtomicUsize::new(0));
    let client = {
        let (http, stop, local, remote, total) = (
            h.http.clone(),
            Arc::clone(&stop),
            Arc::clone(&local),
            Arc::clone(&remote),
            Arc::clone(&total),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let reply = http.post("/billing", "$1").await;
                match (reply.status, reply.body.as_str()) {
                    (StatusCode::OK, "billed:$1") => local.fetch_add(1, Ordering::SeqCst),
                    (StatusCode::OK, "remote-billed:$1") => remote.fetch_add(1, Ordering::SeqCst),
                    other => panic!("a request failed during the flip: {other:?}"),
                };
                total.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let shell = h.shell();
    for i in 0..6 {
        let (strategy, expected) = if i % 2 == 0 {
            ("http", "remote-billed:$2")
        } else {
            ("local", "billed:$2")
        };
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
        h.until("billing's flip", Harness::strategy_is("billing", strategy))
            .await;
        // The first request after the switch is served by the new side.
        assert_eq!(
            h.http.post("/billing", "$2").await.body,
            expected,
            "flip {i}"
        );
        // Let the client through on this side of the switch too.
        let seen = total.load(Ordering::SeqCst);
        progress(&total, seen + 5, &client).await;
    }
    stop.store(true, Ordering::SeqCst);
    client.await.expect("no request failed");
    assert!(local.load(Ordering::SeqCst) >= 5 && remote.load(Ordering::SeqCst) >= 5);
}

#[tokio::test]
async fn a_reload_storm_fails_no_request_on_unchanged_routes() {
    let h = Harness::start(
        vec![
            RouteRow::new("billing", "counted").with_config(r#"{"circuit_breaker": {}}"#),
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
    assert_eq!(h.builds.load(Ordering::SeqCst), 1);
    let reloads_before = *h.router.reloads().borrow();
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
    h.until("the storm's last write", |r| {
        r.inspect("storm-done").is_some()
    })
    .await;
    let after = served.load(Ordering::SeqCst) + 20;
    progress(&served, after, &client).await;
    stop.store(true, Ordering::SeqCst);
    client
        .await
        .expect("no request on the unchanged route failed");
    // The storm did reload the router, many times, and never rebuilt billing (its breaker and
    // connections were kept throughout).
    let reloads = *h.router.reloads().borrow() - reloads_before;
    assert!(reloads >= 10, "only {reloads} reloads");
    assert_eq!(h.builds.load(Ordering::SeqCst), 1);
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
    h.until("billing → noop", Harness::strategy_is("billing", "noop"))
        .await;
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
    h.shell()
        .execute(
            "INSERT INTO routes (service_name, strategy) VALUES ('<script>', 'local')",
            [],
        )
        .unwrap();
    h.until("the <script> row", |r| r.inspect("<script>").is_some())
        .await;
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

#[tokio::test]
async fn services_named_like_the_gateways_pages_are_still_callable() {
    let h = Harness::start(vec![RouteRow::new("status", "local")], None).await;
    h.router.register_local(
        "status",
        service_fn(|b: Bytes| async move { Ok::<_, BoxError>(b) }),
    );
    assert_eq!(h.http.post("/status", "up").await.body, "up");
    assert_eq!(
        h.http.post("/healthz", "x").await.status,
        StatusCode::NOT_FOUND
    );
    // GET still serves the page.
    assert_eq!(
        h.http.send("GET", "/status", "", None).await.json()["router"]["routes"],
        1
    );
}

#[tokio::test]
async fn a_panic_is_logged_not_sent() {
    let h = Harness::start(vec![RouteRow::new("fragile", "local")], None).await;
    let reply = h.http.post("/fragile", "boom").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!message.contains("fragile cannot take a boom"), "{message}");
    assert!(message.contains("panicked"), "{message}");
    // The status page shows it to the operator.
    let info = h.router.inspect("fragile").unwrap();
    assert!(
        info.last_call_error
            .unwrap()
            .contains("fragile cannot take a boom")
    );
}
