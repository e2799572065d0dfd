//! The router without a database: dispatch order, reload diffing, bad rows, panics, stacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use switchyard_core::{RejectionKind, find_cause, find_rejection};
use switchyard_router::{
    FactoryFailed, InvalidConfig, NoFactory, Panic, RouteRow, RouteService, RouteSource, RouteSpec,
    Router, ServiceNotFound, SourceError, SsrfBlocked,
};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

async fn call(router: &Router, name: &str, body: &'static str) -> Result<Bytes, BoxError> {
    router
        .clone()
        .oneshot((name.to_owned(), Bytes::from_static(body.as_bytes())))
        .await
}

fn kind(err: &BoxError) -> RejectionKind {
    find_rejection(&**err)
        .unwrap_or_else(|| panic!("not a rejection: {err}"))
        .kind()
}

fn prefixed(prefix: &'static str) -> RouteService<Bytes, Bytes> {
    BoxCloneSyncService::new(service_fn(move |body: Bytes| async move {
        Ok::<_, BoxError>(Bytes::from(format!(
            "{prefix}{}",
            String::from_utf8_lossy(&body)
        )))
    }))
}

/// A router with a local `billing`, and a `fake` transport answering `remote:<endpoint>:`.
fn router() -> Router {
    let router = Router::new();
    router.register_local("billing", prefixed("billed:"));
    router.register_transport("fake", |spec: &RouteSpec<'_>| {
        let endpoint: &'static str = spec.endpoint.unwrap_or("none").to_owned().leak();
        Ok::<_, BoxError>(BoxCloneSyncService::new(service_fn(
            move |body: Bytes| async move {
                Ok::<_, BoxError>(Bytes::from(format!(
                    "remote:{endpoint}:{}",
                    String::from_utf8_lossy(&body)
                )))
            },
        )))
    });
    router
}

#[tokio::test]
async fn dispatch_follows_the_seed_order() {
    let router = router();
    router.register_local("echo", prefixed(""));

    // A local service with no row is served locally.
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "billed:$1");

    router.reload(vec![
        RouteRow::new("billing", "fake").with_endpoint("b1"),
        RouteRow::new("echo", "noop"),
        RouteRow::new("orphan", "local"),
    ]);
    // An explicit remote row wins over the local service.
    assert_eq!(
        call(&router, "billing", "$2").await.unwrap(),
        "remote:b1:$2"
    );
    // noop answers empty and calls nothing.
    assert_eq!(call(&router, "echo", "x").await.unwrap(), "");
    assert!(router.route("echo").unwrap().is_noop());
    // A `local` row with no local service, and an unknown name: not found.
    for name in ["orphan", "nobody"] {
        let err = call(&router, name, "x").await.unwrap_err();
        assert_eq!(kind(&err), RejectionKind::ServiceNotFound, "{name}");
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(
        find_cause::<ServiceNotFound>(&*call(&router, "nobody", "").await.unwrap_err()).is_some()
    );

    // Back to local by one row.
    router.reload(vec![RouteRow::new("billing", "local")]);
    assert_eq!(call(&router, "billing", "$3").await.unwrap(), "billed:$3");
    assert_eq!(call(&router, "echo", "back").await.unwrap(), "back");
}

fn counting_failing_factory(
    built: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
) -> impl Fn(&RouteSpec<'_>) -> Result<RouteService<Bytes, Bytes>, BoxError> + Send + Sync + 'static
{
    move |_spec: &RouteSpec<'_>| {
        built.fetch_add(1, Ordering::SeqCst);
        let failing = Arc::clone(&failing);
        Ok(BoxCloneSyncService::new(service_fn(move |_body: Bytes| {
            let fail = failing.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err::<Bytes, BoxError>("upstream down".into())
                } else {
                    Ok(Bytes::from_static(b"paid"))
                }
            }
        })))
    }
}

const BREAKER: &str = r#"{"circuit_breaker": {"trip": {"consecutive_failures": {"threshold": 2}}, "wait_in_open": "30s"}}"#;

#[tokio::test]
async fn reload_keeps_unchanged_routes_and_their_breaker_state() {
    let router = router();
    let built = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    router.register_transport(
        "pay",
        counting_failing_factory(Arc::clone(&built), Arc::clone(&failing)),
    );
    let payments = RouteRow::new("payments", "pay").with_config(BREAKER);

    let report = router.reload(vec![payments.clone()]);
    assert_eq!((report.added, report.changed, report.unchanged), (1, 0, 0));
    for _ in 0..2 {
        let err = call(&router, "payments", "").await.unwrap_err();
        assert_eq!(err.to_string(), "upstream down");
    }
    let err = call(&router, "payments", "").await.unwrap_err();
    assert_eq!(err.to_string(), "circuit open: payments");
    assert!(find_cause::<switchyard_breaker::BreakerOpen>(&*err).is_some());
    assert_eq!(kind(&err), RejectionKind::CircuitOpen);

    // Other rows come and go; payments is the same service, still open, not rebuilt.
    failing.store(false, Ordering::SeqCst);
    let report = router.reload(vec![payments.clone(), RouteRow::new("billing", "noop")]);
    assert_eq!((report.added, report.changed, report.unchanged), (1, 0, 1));
    let report = router.reload(vec![payments.clone()]);
    assert_eq!((report.unchanged, report.removed), (1, 1));
    assert_eq!(built.load(Ordering::SeqCst), 1);
    assert_eq!(
        call(&router, "payments", "").await.unwrap_err().to_string(),
        "circuit open: payments"
    );
    let info = router.inspect("payments").unwrap();
    assert_eq!(info.breaker, Some(switchyard_breaker::BreakerState::Open));
    assert_eq!(
        info.last_call_error.as_deref(),
        Some("circuit open: payments")
    );
    assert!(info.last_call_error_at.is_some());
    assert_eq!(info.strategy, "pay");

    // Changing its config row rebuilds it: a new breaker, closed.
    let report = router.reload(vec![payments.with_config(BREAKER.replace("30s", "20s"))]);
    assert_eq!((report.changed, report.unchanged), (1, 0));
    assert_eq!(built.load(Ordering::SeqCst), 2);
    assert_eq!(call(&router, "payments", "").await.unwrap(), "paid");
}

#[tokio::test]
async fn bad_rows_break_only_their_own_route() {
    let router = router();
    router.register_local("echo", prefixed(""));
    router.register_transport(
        "broken",
        |_: &RouteSpec<'_>| -> Result<RouteService<Bytes, Bytes>, BoxError> {
            Err("no credentials for this endpoint".into())
        },
    );
    router.register_transport(
        "explodes",
        |_: &RouteSpec<'_>| -> Result<RouteService<Bytes, Bytes>, BoxError> {
            panic!("factory bug")
        },
    );
    let http = |name: &str, endpoint: &str| RouteRow::new(name, "http").with_endpoint(endpoint);
    // (row, error type check, what the message must say)
    type Check = fn(&BoxError) -> bool;
    let no_factory: Check = |e| find_cause::<NoFactory>(&**e).is_some();
    let invalid: Check = |e| find_cause::<InvalidConfig>(&**e).is_some();
    let failed: Check = |e| find_cause::<FactoryFailed>(&**e).is_some();
    let ssrf: Check = |e| {
        find_cause::<FactoryFailed>(&**e).is_some() && find_cause::<SsrfBlocked>(&**e).is_some()
    };
    let cases: Vec<(RouteRow, Check, &str)> = vec![
        (
            RouteRow::new("r01", "quic"),
            no_factory,
            "no transport registered for strategy `quic`",
        ),
        (RouteRow::new("r02", ""), no_factory, "strategy ``"),
        (
            RouteRow::new("r03", "local").with_config("{not json"),
            invalid,
            "malformed JSON",
        ),
        (
            RouteRow::new("r04", "local").with_config("[1, 2]"),
            invalid,
            "expected a JSON object",
        ),
        (
            RouteRow::new("r05", "local").with_config(r#"{"retry": {"max_attempts": 0}}"#),
            invalid,
            "retry.max_attempts",
        ),
        (
            RouteRow::new("r06", "local").with_config(r#"{"timeout": "soon"}"#),
            invalid,
            "timeout",
        ),
        (
            RouteRow::new("r07", "local")
                .with_config(r#"{"bulkhead": {"max_concurrent_calls": 0}}"#),
            invalid,
            "bulkhead",
        ),
        (
            RouteRow::new("r08", "local").with_config(r#"{"colour": "blue"}"#),
            invalid,
            "colour",
        ),
        (
            RouteRow::new("r09", "local").with_config(r#"{"transport": 5}"#),
            invalid,
            "transport",
        ),
        (
            RouteRow::new("r10", "fake").with_config(r#"{"fallback": "nobody"}"#),
            invalid,
            "no local service named \"nobody\"",
        ),
        (RouteRow::new("bad name", "local"), invalid, "service_name"),
        (http("r12", "not a url"), failed, "invalid URL"),
        (
            RouteRow::new("r13", "http"),
            failed,
            "the http strategy needs an endpoint",
        ),
        (
            http("r14", "ftp://example.com/x"),
            failed,
            "expected http[s]://",
        ),
        (
            http("r15", "https://example.com/x")
                .with_config(r#"{"transport": {"tls": {"ca_file": "/no/such/ca.pem"}}}"#),
            failed,
            "AUTH_1104 invalid `transport.tls.ca_file`",
        ),
        (
            http("r15b", "http://example.com/x")
                .with_config(r#"{"transport": {"tls": {"server_name": "example.com"}}}"#),
            failed,
            "TLS settings need an https endpoint",
        ),
        (http("r16", "http://127.0.0.1:9/x"), ssrf, "loopback"),
        (http("r17", "http://10.1.2.3/x"), ssrf, "private"),
        (
            http("r18", "http://169.254.169.254/latest/meta-data"),
            ssrf,
            "link-local",
        ),
        (http("r19", "http://[::1]:8080/"), ssrf, "loopback"),
        (
            http("r20", "http://[::ffff:127.0.0.1]/"),
            ssrf,
            "IPv4-mapped",
        ),
        (http("r21", "http://[fd00::1]/"), ssrf, "unique-local"),
        (http("r22", "http://0.0.0.0:80/"), ssrf, "unspecified"),
        (
            http("r23", "http://192.168.1.1/")
                .with_config(r#"{"transport": {"content_type": "x"}}"#),
            ssrf,
            "private",
        ),
        (
            http("r24", "http://example.com/").with_config(r#"{"transport": {"verb": "PUT"}}"#),
            failed,
            "unknown field `verb`",
        ),
        (
            http("r25", "http://example.com/")
                .with_config(r#"{"transport": {"content_type": "a\nb"}}"#),
            failed,
            "invalid content_type",
        ),
        (
            RouteRow::new("r26", "broken"),
            failed,
            "no credentials for this endpoint",
        ),
        (RouteRow::new("r27", "explodes"), failed, "factory panicked"),
    ];
    let mut rows: Vec<RouteRow> = cases.iter().map(|(row, ..)| row.clone()).collect();
    rows.push(RouteRow::new("echo", "local").with_config(r#"{"timeout": "1s"}"#));
    let report = router.reload(rows);
    assert_eq!(report.broken, cases.len());
    assert_eq!(router.status().broken, cases.len());

    for (row, check, says) in &cases {
        let name = row.service_name.as_str();
        let err = call(&router, name, "x").await.unwrap_err();
        assert!(check(&err), "{name}: wrong error type: {err}");
        assert!(
            err.to_string().contains(says),
            "{name}: {err:?} does not say {says:?}"
        );
        assert!(
            err.to_string().contains(name),
            "{name}: {err} does not name the route"
        );
        let info = router.inspect(name).unwrap();
        assert_eq!(
            info.error.as_deref().map(|e| e.contains(says)),
            Some(true),
            "{name}"
        );
        assert_eq!(kind(&err), RejectionKind::RouteUnavailable, "{name}");
        assert_eq!(
            switchyard_core::rejection::http_response(find_rejection(&*err).unwrap()).status(),
            503
        );
    }
    // The good route is untouched, and so are the unrouted local services.
    assert_eq!(
        call(&router, "echo", "still here").await.unwrap(),
        "still here"
    );
    assert_eq!(call(&router, "billing", "$5").await.unwrap(), "billed:$5");
}

#[tokio::test]
async fn broken_routes_are_rebuilt_when_their_transport_appears() {
    let router = Router::empty();
    router.reload(vec![RouteRow::new("quotes", "quic")]);
    assert_eq!(
        kind(&call_generic(&router, "quotes").await.unwrap_err()),
        RejectionKind::RouteUnavailable
    );
    router.register_transport("quic", |_: &RouteSpec<'_>| {
        Ok::<_, BoxError>(prefixed("q:"))
    });
    let report = router.reload(vec![RouteRow::new("quotes", "quic")]);
    assert_eq!((report.changed, report.broken), (1, 0));
    assert_eq!(call_generic(&router, "quotes").await.unwrap(), "q:");
}

async fn call_generic(router: &Router<Bytes, Bytes>, name: &str) -> Result<Bytes, BoxError> {
    router.clone().oneshot((name, Bytes::new())).await
}

#[tokio::test]
async fn a_panicking_handler_is_a_typed_error_and_the_route_goes_on() {
    let router = Router::new();
    router.register_local(
        "fragile",
        service_fn(|body: Bytes| async move {
            assert!(&body[..] != b"boom", "cannot handle boom");
            Ok::<_, BoxError>(body)
        }),
    );
    let err = call(&router, "fragile", "boom").await.unwrap_err();
    let panic = find_cause::<Panic>(&*err).expect("a Panic");
    assert_eq!(panic.service(), "fragile");
    assert!(panic.message().contains("cannot handle boom"));
    assert_eq!(kind(&err), RejectionKind::Panic);
    assert_eq!(
        switchyard_core::rejection::http_response(find_rejection(&*err).unwrap()).status(),
        500
    );
    assert_eq!(call(&router, "fragile", "fine").await.unwrap(), "fine");

    // A panic in `call` itself (not in the future) is caught too.
    #[derive(Clone)]
    struct PanicsInCall;
    impl Service<Bytes> for PanicsInCall {
        type Response = Bytes;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Bytes, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Bytes) -> Self::Future {
            panic!("in call")
        }
    }
    router.register_local("eager", PanicsInCall);
    router.reload(vec![RouteRow::new("eager", "local").with_config(BREAKER)]);
    let err = call(&router, "eager", "").await.unwrap_err();
    assert_eq!(find_cause::<Panic>(&*err).unwrap().message(), "in call");
}

fn slow(delay: Duration) -> RouteService<Bytes, Bytes> {
    BoxCloneSyncService::new(service_fn(move |body: Bytes| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(body)
    }))
}

#[tokio::test(start_paused = true)]
async fn a_removed_route_finishes_its_in_flight_calls() {
    let router = Router::new();
    router.register_transport("slow", |_: &RouteSpec<'_>| {
        Ok::<_, BoxError>(slow(Duration::from_secs(1)))
    });
    router.reload(vec![RouteRow::new("report", "slow")]);
    let in_flight = tokio::spawn(call_owned(router.clone(), "report", "q1"));
    tokio::task::yield_now().await;

    let report = router.reload(vec![]);
    assert_eq!(report.removed, 1);
    assert_eq!(
        kind(&call(&router, "report", "q2").await.unwrap_err()),
        RejectionKind::ServiceNotFound
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), "q1");
}

async fn call_owned(
    router: Router,
    name: &'static str,
    body: &'static str,
) -> Result<Bytes, BoxError> {
    call(&router, name, body).await
}

#[tokio::test(start_paused = true)]
async fn the_config_timeout_is_a_call_timeout() {
    let router = Router::new();
    router.register_local("report", slow(Duration::from_secs(5)));
    router.reload(vec![
        RouteRow::new("report", "local").with_config(r#"{"timeout": "1s"}"#),
    ]);
    let started = tokio::time::Instant::now();
    let err = call(&router, "report", "").await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(
        find_cause::<switchyard_resilience::TimedOut>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(kind(&err), RejectionKind::Timeout);
}

#[tokio::test]
async fn a_failing_remote_falls_back_to_a_local_service() {
    let router = router();
    let failing = Arc::new(AtomicBool::new(true));
    router.register_transport(
        "pay",
        counting_failing_factory(Arc::default(), Arc::clone(&failing)),
    );
    router.reload(vec![
        RouteRow::new("payments", "pay").with_config(r#"{"fallback": "billing"}"#),
    ]);
    assert_eq!(call(&router, "payments", "$9").await.unwrap(), "billed:$9");
    failing.store(false, Ordering::SeqCst);
    assert_eq!(call(&router, "payments", "$9").await.unwrap(), "paid");
}

#[tokio::test]
async fn register_local_rebuilds_the_routes_that_use_it() {
    let router = Router::new();
    router.reload(vec![
        RouteRow::new("billing", "local").with_config(r#"{"timeout": "1s"}"#),
    ]);
    assert_eq!(
        kind(&call(&router, "billing", "").await.unwrap_err()),
        RejectionKind::ServiceNotFound
    );
    assert!(!router.inspect("billing").unwrap().has_local);

    router.register_local("billing", prefixed("v1:"));
    assert_eq!(call(&router, "billing", "a").await.unwrap(), "v1:a");
    router.register_local("billing", prefixed("v2:"));
    assert_eq!(call(&router, "billing", "b").await.unwrap(), "v2:b");
    let info = router.inspect("billing").unwrap();
    assert!(info.has_local && info.has_route && info.error.is_none());
}

#[tokio::test]
async fn a_route_layer_makes_one_service_switchable() {
    let router = router();
    let mut quotes = router.layer_for("quotes").layer(prefixed("local quote "));
    assert_eq!(
        quotes
            .ready()
            .await
            .unwrap()
            .call(Bytes::from("ACME"))
            .await
            .unwrap(),
        "local quote ACME"
    );
    router.reload(vec![RouteRow::new("quotes", "fake").with_endpoint("q")]);
    assert_eq!(
        quotes
            .ready()
            .await
            .unwrap()
            .call(Bytes::from("ACME"))
            .await
            .unwrap(),
        "remote:q:ACME"
    );
    router.reload(vec![RouteRow::new("quotes", "noop")]);
    assert_eq!(
        quotes
            .ready()
            .await
            .unwrap()
            .call(Bytes::from("ACME"))
            .await
            .unwrap(),
        ""
    );
}

#[tokio::test]
async fn the_router_is_generic_over_its_request_and_response() {
    let router: Router<String, usize> = Router::empty();
    router.register_local(
        "len",
        service_fn(|s: String| async move { Ok::<_, BoxError>(s.len()) }),
    );
    assert_eq!(
        router
            .clone()
            .oneshot(("len", "four".to_owned()))
            .await
            .unwrap(),
        4
    );
    router.reload(vec![RouteRow::new("len", "noop")]);
    assert_eq!(
        router
            .clone()
            .oneshot(("len", "four".to_owned()))
            .await
            .unwrap(),
        0
    );
}

struct Unreadable;

impl RouteSource for Unreadable {
    async fn load(&self) -> Result<Vec<RouteRow>, SourceError> {
        Err(SourceError::msg("database is locked"))
    }

    async fn changed(&self) -> Result<(), SourceError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_unreadable_source_keeps_the_last_snapshot_and_says_so() {
    let router = router();
    router.reload(vec![RouteRow::new("billing", "fake").with_endpoint("b")]);
    let err = router.reload_from(&Unreadable).await.unwrap_err();
    assert_eq!(err.to_string(), "database is locked");
    let status = router.status();
    assert_eq!(status.last_error.as_deref(), Some("database is locked"));
    assert!(status.last_error_at.is_some());
    assert_eq!(status.routes, 1);
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "remote:b:$1");

    // The next good reload clears the error.
    router.reload(vec![RouteRow::new("billing", "local")]);
    assert_eq!(router.status().last_error, None);
}

#[tokio::test]
async fn services_lists_routes_and_local_only_services() {
    let router = router();
    router.register_local("echo", prefixed(""));
    router.reload(vec![
        RouteRow::new("billing", "fake").with_endpoint("http://b"),
        RouteRow::new("ghost", "quic"),
    ]);
    let services = router.services();
    let summary: Vec<_> = services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.strategy.as_str(),
                s.has_local,
                s.has_route,
                s.error.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("billing", "fake", true, true, false),
            ("echo", "local", true, false, false),
            ("ghost", "quic", false, true, true),
        ]
    );
    assert_eq!(services[0].endpoint.as_deref(), Some("http://b"));
    assert!(router.inspect("nobody").is_none());
}

#[tokio::test]
async fn status_snapshots_mask_credentials_in_endpoints() {
    let router = router();
    router.reload(vec![
        RouteRow::new("a", "fake")
            .with_endpoint("http://user:secret@example.com:8080/bill?token=abc"),
        RouteRow::new("b", "fake").with_endpoint("http://example.com/bill"),
    ]);
    assert_eq!(
        router.inspect("a").unwrap().endpoint.as_deref(),
        Some("http://***@example.com:8080/bill?***")
    );
    assert_eq!(
        router.inspect("b").unwrap().endpoint.as_deref(),
        Some("http://example.com/bill")
    );
}

/// Fails its first `fail` loads, then serves `rows`; reports one change, then none.
struct Flaky {
    fail: std::sync::Mutex<usize>,
    changed: std::sync::Mutex<bool>,
}

impl RouteSource for Flaky {
    async fn load(&self) -> Result<Vec<RouteRow>, SourceError> {
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(SourceError::msg("database is locked"));
        }
        Ok(vec![RouteRow::new("billing", "noop")])
    }

    async fn changed(&self) -> Result<(), SourceError> {
        let first = std::mem::replace(&mut *self.changed.lock().unwrap(), false);
        if first {
            return Ok(());
        }
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn the_watcher_retries_a_failed_reload_until_it_succeeds() {
    let router = router();
    let _watch = router.watch(Flaky {
        fail: std::sync::Mutex::new(2),
        changed: std::sync::Mutex::new(true),
    });
    let started = tokio::time::Instant::now();
    let mut reloads = router.reloads();
    reloads.borrow_and_update();
    reloads.changed().await.unwrap();
    // Two failed attempts, one retry interval after each.
    assert_eq!(started.elapsed(), 2 * switchyard_router::RETRY_INTERVAL);
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "");
    assert_eq!(router.status().last_error, None);
}
