//! `switchyard serve` over HTTPS, in process: a real TLS client with the test CA, mTLS, and a
//! certificate renewed on disk while requests run, with no failed request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_cli::{DEFAULT_MAX_BODY_BYTES, ServeConfig, ServerTlsFiles, Workers, serve};
use switchyard_client::test_util::TestCa;
use switchyard_client::{Connector, Guard, TlsConfig, TlsFailed, TlsFailure};
use tokio::sync::oneshot;
use tower::BoxError;

/// A running gateway over HTTPS, stopped when dropped.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(dir: tempfile::TempDir, client_ca: bool) -> Running {
    let files = ServerTlsFiles {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: client_ca.then(|| dir.path().join("clients.pem")),
    };
    let config = ServeConfig {
        db: dir.path().join("routes.db"),
        listen: "127.0.0.1:0".parse().unwrap(),
        poll_interval: Duration::from_millis(20),
        allow_internal: false,
        admin_token: None,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        tls: Some(files),
        workers: Workers::default(),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let ready = move |addr| {
            let _ = ready_tx.send(addr);
        };
        serve(config, ready, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serves");
    });
    let addr = ready_rx.await.expect("listening");
    Running {
        addr,
        stop: Some(stop),
        _dir: dir,
    }
}

fn connector(tls: &TlsConfig) -> Connector {
    Guard::new()
        .allow_internal(true)
        .connector(true, tls, &[b"h2", b"http/1.1"], None)
        .expect("a connector")
}

async fn bill(connector: Connector, addr: SocketAddr) -> Result<String, BoxError> {
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let request = axum::http::Request::post(format!("https://{addr}/billing"))
        .body(Full::new(Bytes::from_static(b"$100")))?;
    let response = client.request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https_to_a_client_trusting_its_ca() {
    let ca = TestCa::new("gateway CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server(&["127.0.0.1"]).write(dir.path(), "server");
    assert!(cert.exists() && key.exists());
    write(dir.path(), "ca.pem", &ca.cert_pem());
    let ca_file = dir.path().join("ca.pem");
    let gateway = start(dir, false).await;
    let trusting = TlsConfig {
        ca_file: Some(ca_file),
        ..TlsConfig::default()
    };
    assert_eq!(
        bill(connector(&trusting), gateway.addr)
            .await
            .expect("billed"),
        "billed:$100"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_the_gateway_requires_a_client_certificate() {
    let ca = TestCa::new("gateway CA");
    let clients = TestCa::new("client CA");
    let dir = tempfile::tempdir().unwrap();
    ca.server(&["127.0.0.1"]).write(dir.path(), "server");
    write(dir.path(), "clients.pem", &clients.cert_pem());
    write(dir.path(), "ca.pem", &ca.cert_pem());
    let (cert_file, key_file) = clients.client("caller").write(dir.path(), "caller");
    let ca_file = dir.path().join("ca.pem");
    let gateway = start(dir, true).await;
    let anonymous = TlsConfig {
        ca_file: Some(ca_file.clone()),
        ..TlsConfig::default()
    };
    assert!(bill(connector(&anonymous), gateway.addr).await.is_err());
    let identified = TlsConfig {
        ca_file: Some(ca_file),
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        server_name: None,
    };
    assert_eq!(
        bill(connector(&identified), gateway.addr)
            .await
            .expect("billed"),
        "billed:$100"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_failed_request_and_a_bad_one_is_kept_out() {
    let ca = TestCa::new("gateway CA");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    ca.server(&["127.0.0.1"]).write(&path, "server");
    write(&path, "ca.pem", &ca.cert_pem());
    let ca_file = path.join("ca.pem");
    let gateway = start(dir, false).await;
    let addr = gateway.addr;
    let by_ip = TlsConfig {
        ca_file: Some(ca_file.clone()),
        ..TlsConfig::default()
    };
    let by_new_name = TlsConfig {
        server_name: Some("renewed.test".into()),
        ..by_ip.clone()
    };
    // Before the renewal the certificate does not hold the new name.
    let err = bill(connector(&by_new_name), addr).await.unwrap_err();
    let failed = TlsFailed::find(&*err).unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(failed.failure(), TlsFailure::NameMismatch);

    // Requests run (a new connection each) while the certificate is renewed on disk.
    let done = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load = {
        let (done, ok, failed, by_ip) = (done.clone(), ok.clone(), failed.clone(), by_ip.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match bill(connector(&by_ip), addr).await.as_deref() {
                    Ok("billed:$100") => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    ca.server(&["127.0.0.1", "renewed.test"])
        .write(&path, "server");
    // The gateway checks every 20 ms; wait (bounded) until the new certificate is served.
    let mut renewed = false;
    for _ in 0..250 {
        if bill(connector(&by_new_name), addr).await.is_ok() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(renewed, "the renewed certificate was never served");

    // A broken pair (a key that is not PEM) is reported and kept out: the renewed one serves.
    write(&path, "server.key", "not a key\n");
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector(&by_ip));
    let mut reported = None;
    for _ in 0..250 {
        let request = axum::http::Request::get(format!("https://{addr}/status"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = client.request(request).await.expect("status").into_body();
        let status: serde_json::Value =
            serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
        if let Some(error) = status["tls"]["last_error"].as_str() {
            reported = Some(error.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reported = reported.expect("the bad pair is reported in /status");
    assert!(
        reported.contains("AUTH_1104") && reported.contains("tls_key"),
        "{reported}"
    );
    assert_eq!(
        bill(connector(&by_new_name), addr)
            .await
            .expect("still served"),
        "billed:$100"
    );

    done.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 0, "the load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
}
