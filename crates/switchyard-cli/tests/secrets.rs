//! Secrets written into route rows — a bearer token, a password in an endpoint's user info, a
//! custom header, a secret of the wrong type — never leave the process: not in `/status`, the
//! status page, `/metrics`, `inspect`, an error answer or a log line.
//!
//! Its own test binary: it installs the process's log subscriber and metrics recorder.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_cli::{Gateway, builtin_router};
use switchyard_router::{RouteRow, SqliteSource};

const SECRETS: [&str; 5] = [
    "s3cret-token-1",
    "hunter2-password",
    "s3cret-header-3",
    "987654321",
    "s3cret-key-5",
];

/// Every log line, at every level of this project's crates and their dependencies up to debug.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A port nothing listens on: calls to it fail, and are logged and reported.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
) -> String {
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn assert_no_secret(place: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{secret} leaked into {place}:\n{text}"
        );
    }
}

#[tokio::test]
async fn secrets_in_routes_reach_no_page_metric_error_or_log() {
    let logs = Logs::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(logs.clone())
            .finish(),
    )
    .unwrap();
    let metrics = switchyard_cli::prometheus().expect("the first recorder of this process");

    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("client.key");
    std::fs::write(&key_file, "s3cret-key-5 is not a PEM key").unwrap();
    let rows = [
        // Credentials on http:// are refused unless internal targets are allowed: they are here.
        RouteRow::new("bearer", "http")
            .with_endpoint(format!("http://billing:hunter2-password@127.0.0.1:{port}/charge"))
            .with_config(r#"{"transport":{"auth":{"method":"bearer","token":"s3cret-token-1"}}}"#),
        RouteRow::new("custom", "http")
            .with_endpoint(format!("http://127.0.0.1:{port}/charge?key=hunter2-password"))
            .with_config(
                r#"{"transport":{"auth":{"method":"custom","headers":{"x-secret":"s3cret-header-3"}}}}"#,
            ),
        // A secret of the wrong type: serde's message would repeat the value.
        RouteRow::new("wrong-type", "http")
            .with_endpoint(format!("http://127.0.0.1:{port}/charge"))
            .with_config(r#"{"transport":{"auth":{"method":"bearer","token":987654321}}}"#),
        // A key file that is not a key: its content must not be quoted.
        RouteRow::new("bad-key", "http")
            .with_endpoint(format!("https://127.0.0.1:{port}/charge"))
            .with_config(
                serde_json::json!({"transport": {"tls": {
                    "cert_file": key_file, "key_file": key_file,
                }}})
                .to_string(),
            ),
    ];
    // Written as a shell would, unchecked: the admin API refuses some of these rows.
    let path = dir.path().join("routes.db");
    let mut shell = switchyard_router::sqlite::open(&path).unwrap();
    switchyard_router::sqlite::init(&mut shell).unwrap();
    for row in &rows {
        shell
            .execute(
                "INSERT INTO routes (service_name, strategy, endpoint, config) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![row.service_name, row.strategy, row.endpoint, row.config],
            )
            .unwrap();
    }
    let source = SqliteSource::open(&path).unwrap();
    let router = builtin_router(true);
    router.reload_from(&source).await.unwrap();
    let gateway = Gateway::new(router.clone()).with_metrics(metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, switchyard_cli::app(gateway)).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for row in &rows {
        let url = format!("http://{addr}/{}", row.service_name);
        let request = axum::http::Request::post(url)
            .body(Full::new(Bytes::from("$1")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(
            !status.is_success(),
            "{}: {status} {body}",
            row.service_name
        );
        assert_no_secret(&format!("the answer of {}", row.service_name), &body);
    }
    // Every route failed in its own way and says so (the checks below look at real errors).
    let services = router.services();
    let error_of = |name: &str| {
        let info = services.iter().find(|s| s.name == name).unwrap();
        info.error
            .clone()
            .or(info.last_call_error.clone())
            .unwrap_or_default()
    };
    assert!(
        error_of("bearer").contains("upstream of bearer failed"),
        "{}",
        error_of("bearer")
    );
    assert!(
        error_of("wrong-type").contains("transport.auth.token"),
        "{}",
        error_of("wrong-type")
    );
    assert!(
        error_of("bad-key").contains("AUTH_1104"),
        "{}",
        error_of("bad-key")
    );
    for info in &services {
        assert_no_secret(&format!("inspect({})", info.name), &format!("{info:?}"));
    }

    for page in ["status", "", "metrics"] {
        let text = get(&client, format!("http://{addr}/{page}")).await;
        assert!(text.contains("bearer"), "/{page} lists the routes:\n{text}");
        assert_no_secret(&format!("/{page}"), &text);
    }
    let logs = logs.text();
    assert!(
        logs.contains("route broken"),
        "the broken routes were logged:\n{logs}"
    );
    assert_no_secret("the log", &logs);
}
