//! `https` routes against real TLS upstreams on 127.0.0.1: a private CA, a failed handshake as
//! a typed error naming the route, and mTLS. Certificates are made in each test.

use std::path::PathBuf;

use bytes::Bytes;
use switchyard_client::test_util::{HttpsServer, Seen, TestCa};
use switchyard_core::{RejectionKind, find_cause, find_rejection};
use switchyard_router::{FactoryFailed, HttpTransport, RouteRow, Router, TlsFailed, TlsFailure};
use tower::{BoxError, ServiceExt};

fn answer(seen: Seen) -> http::Response<String> {
    let Seen {
        body,
        client_certificate,
        ..
    } = seen;
    http::Response::new(format!(
        "billed:{}:{}",
        String::from_utf8_lossy(&body),
        if client_certificate { "mtls" } else { "tls" }
    ))
}

/// An HTTPS upstream on 127.0.0.1 with a certificate of `ca`, requiring client certificates
/// of `clients` when given.
async fn upstream(ca: &TestCa, clients: Option<&TestCa>) -> HttpsServer {
    HttpsServer::start(
        TestCa::server_config(&ca.server(&["127.0.0.1"]), clients),
        answer,
    )
    .await
}

fn router() -> Router {
    let router = Router::new();
    router.register_transport("http", HttpTransport::new().allow_internal(true));
    router
}

async fn call(router: &Router, name: &str) -> Result<Bytes, BoxError> {
    router
        .clone()
        .oneshot((name, Bytes::from_static(b"$100")))
        .await
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A route to `url` whose `transport.tls` is `tls` (a JSON object).
fn route(name: &str, url: &str, tls: &serde_json::Value) -> RouteRow {
    RouteRow::new(name, "http")
        .with_endpoint(url)
        .with_config(serde_json::json!({ "transport": { "tls": tls } }).to_string())
}

#[tokio::test]
async fn an_https_route_reaches_its_upstream_through_a_private_ca() {
    let ca = TestCa::new("test CA");
    let upstream = upstream(&ca, None).await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca_file = write(&dir, "ca.pem", &ca.cert_pem());
    let router = router();
    router.reload(vec![route(
        "billing",
        &upstream.url("/charge"),
        &serde_json::json!({ "ca_file": ca_file }),
    )]);
    assert_eq!(
        call(&router, "billing").await.expect("billed"),
        "billed:$100:tls"
    );
}

#[tokio::test]
async fn a_failed_handshake_is_a_tls_failure_naming_the_route_and_a_502() {
    let ca = TestCa::new("test CA");
    let other = TestCa::new("another CA");
    let upstream = upstream(&other, None).await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca_file = write(&dir, "ca.pem", &ca.cert_pem());
    let router = router();
    router.reload(vec![route(
        "billing",
        &upstream.url("/charge"),
        &serde_json::json!({ "ca_file": ca_file }),
    )]);
    let err = call(&router, "billing").await.expect_err("refused");
    let tls = find_cause::<TlsFailed>(&*err).unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(tls.failure(), TlsFailure::UnknownIssuer);
    assert_eq!(tls.service(), Some("billing"));
    assert!(err.to_string().starts_with("route billing: "), "{err}");
    let rejection = find_rejection(&*err).expect("a rejection");
    assert_eq!(rejection.kind(), RejectionKind::UpstreamFailed);
    assert_eq!(rejection.kind().http_status(), 502);
}

#[tokio::test]
async fn an_upstream_that_wants_a_client_certificate_gets_the_routes_one() {
    let ca = TestCa::new("test CA");
    let clients = TestCa::new("client CA");
    let upstream = upstream(&ca, Some(&clients)).await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca_file = write(&dir, "ca.pem", &ca.cert_pem());
    let (cert_file, key_file) = clients.client("billing").write(dir.path(), "client");
    let router = router();
    router.reload(vec![
        route(
            "with-cert",
            &upstream.url("/charge"),
            &serde_json::json!({ "ca_file": ca_file, "cert_file": cert_file, "key_file": key_file }),
        ),
        route(
            "without-cert",
            &upstream.url("/charge"),
            &serde_json::json!({ "ca_file": ca_file }),
        ),
    ]);
    assert_eq!(
        call(&router, "with-cert").await.expect("billed"),
        "billed:$100:mtls"
    );
    // Without one the call fails (over TLS 1.3 the refusal may come as the alert or as the
    // connection's reset: either way it is that route's failure, not a success).
    let err = call(&router, "without-cert").await.expect_err("refused");
    let rejection = find_rejection(&*err).expect("a rejection");
    assert_eq!(rejection.kind(), RejectionKind::UpstreamFailed, "{err}");
    assert_eq!(rejection.subject(), Some("without-cert"), "{err}");
}

#[tokio::test]
async fn an_unusable_tls_file_breaks_only_its_route() {
    let router = router();
    router.register_local(
        "local",
        tower::service_fn(|b: Bytes| async move { Ok::<_, BoxError>(b) }),
    );
    router.reload(vec![
        route(
            "billing",
            "https://127.0.0.1:1/charge",
            &serde_json::json!({ "cert_file": "/no/such/client.pem", "key_file": "/no/such/client.key" }),
        ),
        RouteRow::new("local", "local"),
    ]);
    let err = call(&router, "billing").await.expect_err("broken");
    assert!(find_cause::<FactoryFailed>(&*err).is_some(), "{err}");
    assert!(
        err.to_string()
            .contains("AUTH_1104 invalid `transport.tls.cert_file`"),
        "{err}"
    );
    assert_eq!(call(&router, "local").await.expect("served"), "$100");
}

#[tokio::test]
async fn a_renewed_ca_file_rebuilds_only_the_routes_that_read_it() {
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("the new CA, renewed");
    // The upstream already presents a certificate of the new CA.
    let upstream = upstream(&new_ca, None).await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca_file = write(&dir, "ca.pem", &old_ca.cert_pem());
    let router = router();
    router.register_local(
        "local",
        tower::service_fn(|b: Bytes| async move { Ok::<_, BoxError>(b) }),
    );
    router.reload(vec![
        route(
            "billing",
            &upstream.url("/charge"),
            &serde_json::json!({ "ca_file": ca_file }),
        ),
        RouteRow::new("local", "local"),
    ]);
    let err = call(&router, "billing").await.expect_err("the old CA");
    assert_eq!(
        find_cause::<TlsFailed>(&*err).map(TlsFailed::failure),
        Some(TlsFailure::UnknownIssuer)
    );
    assert!(router.refresh_files().is_none(), "nothing changed yet");

    write(&dir, "ca.pem", &new_ca.cert_pem());
    let report = router.refresh_files().expect("the route is rebuilt");
    assert_eq!((report.changed, report.unchanged), (1, 1), "{report:?}");
    assert_eq!(
        call(&router, "billing").await.expect("billed"),
        "billed:$100:tls"
    );
    assert!(router.refresh_files().is_none(), "rebuilt once");
}

#[tokio::test]
async fn a_half_written_renewal_keeps_the_previous_build_serving_until_a_good_one() {
    let ca = TestCa::new("the CA");
    let upstream = upstream(&ca, None).await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca_file = write(&dir, "ca.pem", &ca.cert_pem());
    let router = router();
    router.reload(vec![route(
        "billing",
        &upstream.url("/charge"),
        &serde_json::json!({ "ca_file": ca_file }),
    )]);
    assert_eq!(
        call(&router, "billing").await.expect("billed"),
        "billed:$100:tls"
    );

    // Caught mid-write: the file holds half a certificate.
    let pem = ca.cert_pem();
    write(&dir, "ca.pem", &pem[..pem.len() / 2]);
    let report = router.refresh_files().expect("the new file is tried");
    assert_eq!(
        (report.changed, report.unchanged, report.broken),
        (0, 1, 0),
        "{report:?}"
    );
    assert_eq!(
        call(&router, "billing")
            .await
            .expect("the previous build serves on"),
        "billed:$100:tls"
    );
    let info = &router.services()[0];
    assert_eq!(info.error, None);
    let rejected = info
        .rejected_files
        .as_deref()
        .expect("the rejection is reported");
    assert!(rejected.contains("AUTH_1104"), "{rejected}");
    assert!(
        router.refresh_files().is_none(),
        "not retried until the file changes again"
    );

    // The writer finishes (the same CA, written out with a trailing newline): taken.
    write(&dir, "ca.pem", &format!("{pem}\n"));
    let report = router.refresh_files().expect("the finished file is tried");
    assert_eq!((report.changed, report.broken), (1, 0), "{report:?}");
    assert_eq!(router.services()[0].rejected_files, None);
    assert_eq!(
        call(&router, "billing").await.expect("billed"),
        "billed:$100:tls"
    );

    // A row change is not a renewal: a bad file named by a new config breaks the route.
    let bad = write(&dir, "bad.pem", "not a certificate");
    router.reload(vec![route(
        "billing",
        &upstream.url("/charge"),
        &serde_json::json!({ "ca_file": bad }),
    )]);
    let err = call(&router, "billing").await.expect_err("broken");
    assert!(err.to_string().contains("AUTH_1104"), "{err}");
}

#[tokio::test]
async fn the_watcher_picks_up_a_renewed_file_on_its_poll() {
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("the new CA, renewed");
    let upstream = upstream(&new_ca, None).await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca_file = write(&dir, "ca.pem", &old_ca.cert_pem());
    let source = switchyard_router::SqliteSource::open(dir.path().join("routes.db"))
        .expect("a routes file")
        .poll_interval(std::time::Duration::from_millis(10));
    source
        .admin()
        .expect("an admin")
        .upsert(route(
            "billing",
            &upstream.url("/charge"),
            &serde_json::json!({ "ca_file": ca_file }),
        ))
        .await
        .expect("written");
    let router = router();
    router.reload_from(&source).await.expect("loaded");
    let _watch = router.watch(source);
    assert!(call(&router, "billing").await.is_err(), "the old CA");
    write(&dir, "ca.pem", &new_ca.cert_pem());
    // Bounded: a failure deadline, not a wait.
    let mut served = false;
    for _ in 0..500 {
        if call(&router, "billing").await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(served, "the renewed CA was never picked up");
}
