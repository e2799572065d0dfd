//! TLS against real servers on 127.0.0.1: private CAs, every way a handshake fails, mTLS, and
//! the SSRF guard in front of `https` as in front of `http`. Certificates are made in each test.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_client::test_util::{HttpsServer, Issued, Seen, TestCa};
use switchyard_client::{
    AuthCode, Connector, Guard, Resolver, SsrfBlocked, TlsConfig, TlsFailed, TlsFailure,
};
use tower::BoxError;
use tower::util::BoxCloneSyncService;

const HTTP1: &[&[u8]] = &[b"http/1.1"];

fn answer(seen: Seen) -> http::Response<String> {
    let Seen {
        parts,
        body,
        client_certificate,
    } = seen;
    let cert = if client_certificate {
        "with"
    } else {
        "without"
    };
    http::Response::new(format!(
        "{} {} {cert} a client certificate: {}",
        parts.method,
        parts.uri.path(),
        String::from_utf8_lossy(&body)
    ))
}

/// A directory holding `ca.pem` (the CA a client trusts) and whatever else a test writes.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn ca(&self, ca: &TestCa) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert_pem()).expect("write");
        path
    }

    fn issued(&self, issued: &Issued, stem: &str) -> (PathBuf, PathBuf) {
        issued.write(self.dir.path(), stem)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

fn trusting(ca_file: PathBuf) -> TlsConfig {
    TlsConfig {
        ca_file: Some(ca_file),
        ..TlsConfig::default()
    }
}

fn connector(tls: &TlsConfig) -> Connector {
    Guard::new()
        .allow_internal(true)
        .connector(true, tls, HTTP1, None)
        .expect("a connector")
}

async fn post(connector: Connector, url: &str) -> Result<String, BoxError> {
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let request = http::Request::post(url).body(Full::new(Bytes::from_static(b"$100")))?;
    let response = client.request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The failure of a call that must fail its handshake.
async fn failure(connector: Connector, url: &str) -> TlsFailed {
    let err = post(connector, url).await.expect_err("the handshake fails");
    TlsFailed::find(&*err).unwrap_or_else(|| panic!("a TLS failure in {err:?}"))
}

async fn server(issued: &Issued) -> HttpsServer {
    HttpsServer::start(TestCa::server_config(issued, None), answer).await
}

#[tokio::test]
async fn an_https_upstream_is_reached_through_a_private_ca() {
    let ca = TestCa::new("test CA");
    let upstream = server(&ca.server(&["127.0.0.1"])).await;
    let files = Files::new();
    let answer = post(
        connector(&trusting(files.ca(&ca))),
        &upstream.url("/charge"),
    )
    .await
    .expect("answered");
    assert_eq!(answer, "POST /charge without a client certificate: $100");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_an_unknown_issuer() {
    let ca = TestCa::new("test CA");
    let other = TestCa::new("another CA");
    let upstream = server(&other.server(&["127.0.0.1"])).await;
    let files = Files::new();
    let failed = failure(connector(&trusting(files.ca(&ca))), &upstream.url("/")).await;
    assert_eq!(failed.failure(), TlsFailure::UnknownIssuer);
    assert!(failed.to_string().contains("unknown CA"), "{failed}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch_unless_that_name_is_asked_for() {
    let ca = TestCa::new("test CA");
    let upstream = server(&ca.server(&["billing.internal"])).await;
    let files = Files::new();
    let tls = trusting(files.ca(&ca));
    let failed = failure(connector(&tls), &upstream.url("/")).await;
    assert_eq!(failed.failure(), TlsFailure::NameMismatch);

    // The same server, verified (and asked by SNI) for the name its certificate holds.
    let named = TlsConfig {
        server_name: Some("billing.internal".into()),
        ..tls
    };
    let answer = post(connector(&named), &upstream.url("/charge")).await;
    assert_eq!(
        answer.expect("answered"),
        "POST /charge without a client certificate: $100"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused_as_expired() {
    let ca = TestCa::new("test CA");
    let upstream = server(&ca.expired_server(&["127.0.0.1"])).await;
    let files = Files::new();
    let failed = failure(connector(&trusting(files.ca(&ca))), &upstream.url("/")).await;
    assert_eq!(failed.failure(), TlsFailure::Expired);
}

#[tokio::test]
async fn an_upstream_that_requires_a_client_certificate_refuses_a_client_without_one() {
    let ca = TestCa::new("test CA");
    let clients = TestCa::new("client CA");
    // TLS 1.2: the refusal comes inside the handshake, so the client sees it every time (with
    // TLS 1.3 it comes with the first read, and may lose the race to the connection's reset).
    let config = TestCa::server_config_with(
        &ca.server(&["127.0.0.1"]),
        Some(&clients),
        &[&rustls::version::TLS12],
    );
    let upstream = HttpsServer::start(config, answer).await;
    let files = Files::new();
    let tls = trusting(files.ca(&ca));
    let failed = failure(connector(&tls), &upstream.url("/")).await;
    assert_eq!(failed.failure(), TlsFailure::ClientCertificateRequired);

    // With a certificate the upstream's CA signed, the same server answers.
    let (cert_file, key_file) = files.issued(&clients.client("billing-client"), "client");
    let mtls = TlsConfig {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..tls
    };
    let answer = post(connector(&mtls), &upstream.url("/charge")).await;
    assert_eq!(
        answer.expect("answered"),
        "POST /charge with a client certificate: $100"
    );
}

#[tokio::test]
async fn mtls_works_over_tls_1_3_too() {
    let ca = TestCa::new("test CA");
    let clients = TestCa::new("client CA");
    let config = TestCa::server_config(&ca.server(&["127.0.0.1"]), Some(&clients));
    let upstream = HttpsServer::start(config, answer).await;
    let files = Files::new();
    let (cert_file, key_file) = files.issued(&clients.client("billing-client"), "client");
    let mtls = TlsConfig {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..trusting(files.ca(&ca))
    };
    let answer = post(connector(&mtls), &upstream.url("/charge")).await;
    assert_eq!(
        answer.expect("answered"),
        "POST /charge with a client certificate: $100"
    );
}

#[tokio::test]
async fn the_ssrf_guard_refuses_internal_https_endpoints_and_names_that_resolve_to_them() {
    let guard = Guard::new();
    for url in [
        "https://localhost/x",
        "https://10.0.0.1/x",
        "https://[::1]/x",
        "https://127.0.0.1:8443/x",
    ] {
        let refused = guard.endpoint(url, "https://host/path");
        // `localhost` is a name: it is refused when it resolves, below.
        if url.starts_with("https://localhost") {
            assert!(refused.is_ok(), "{url}");
            continue;
        }
        let err = refused.expect_err(url);
        assert!(err.downcast_ref::<SsrfBlocked>().is_some(), "{url}: {err}");
    }

    // A name resolving to loopback is refused at connect time, before any TLS.
    let ca = TestCa::new("test CA");
    let upstream = server(&ca.server(&["127.0.0.1", "billing.example.com"])).await;
    let port = upstream.addr().port();
    let to_loopback: Resolver =
        BoxCloneSyncService::new(tower::service_fn(move |_name| async move {
            Ok::<_, BoxError>(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        }));
    let files = Files::new();
    let tls = trusting(files.ca(&ca));
    for (allow, name) in [(false, "billing.example.com"), (false, "localhost")] {
        let connector = Guard::new()
            .allow_internal(allow)
            .with_resolver(to_loopback.clone())
            .connector(true, &tls, HTTP1, None)
            .expect("a connector");
        let err = post(connector, &format!("https://{name}:{port}/x"))
            .await
            .expect_err("refused");
        assert!(
            switchyard_core::find_cause::<SsrfBlocked>(&*err).is_some(),
            "{name}: {err:?}"
        );
    }
    // Allowed, the same name reaches the server.
    let connector = Guard::new()
        .allow_internal(true)
        .with_resolver(to_loopback)
        .connector(true, &tls, HTTP1, None)
        .expect("a connector");
    let answer = post(
        connector,
        &format!("https://billing.example.com:{port}/charge"),
    )
    .await;
    assert_eq!(
        answer.expect("answered"),
        "POST /charge without a client certificate: $100"
    );
}

#[test]
fn unusable_tls_files_are_auth_1104_naming_their_field() {
    let ca = TestCa::new("test CA");
    let files = Files::new();
    let ca_file = files.ca(&ca);
    let (cert, key) = files.issued(&ca.client("c"), "client");
    let (_, other_key) = files.issued(&ca.client("d"), "other");
    let garbage = files.write("garbage.pem", "not PEM at all\n");
    let empty = files.write("empty.pem", "");
    let cases = [
        (
            TlsConfig {
                ca_file: Some("/no/such/ca.pem".into()),
                ..TlsConfig::default()
            },
            "ca_file",
        ),
        (
            TlsConfig {
                ca_file: Some(empty),
                ..TlsConfig::default()
            },
            "ca_file",
        ),
        (
            TlsConfig {
                ca_file: Some(garbage.clone()),
                ..TlsConfig::default()
            },
            "ca_file",
        ),
        (
            TlsConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(cert.clone()),
                ..TlsConfig::default()
            },
            "key_file",
        ),
        (
            TlsConfig {
                ca_file: Some(ca_file.clone()),
                key_file: Some(key.clone()),
                ..TlsConfig::default()
            },
            "cert_file",
        ),
        (
            TlsConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(garbage.clone()),
                key_file: Some(key),
                ..TlsConfig::default()
            },
            "cert_file",
        ),
        (
            TlsConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(cert.clone()),
                key_file: Some(garbage),
                ..TlsConfig::default()
            },
            "key_file",
        ),
        (
            TlsConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(cert),
                key_file: Some(other_key),
                ..TlsConfig::default()
            },
            "key_file",
        ),
        (
            TlsConfig {
                ca_file: Some(ca_file),
                server_name: Some("not a name!".into()),
                ..TlsConfig::default()
            },
            "server_name",
        ),
    ];
    for (tls, field) in cases {
        let err = Guard::new()
            .connector(true, &tls, HTTP1, None)
            .expect_err(field);
        assert_eq!(
            (err.code(), err.field()),
            (AuthCode::MissingMtlsCerts, field),
            "{err}"
        );
        assert!(err.to_string().starts_with("AUTH_1104 invalid `"), "{err}");
    }
}

#[test]
fn a_plain_connector_reads_no_file() {
    let tls = TlsConfig {
        ca_file: Some("/no/such/ca.pem".into()),
        ..TlsConfig::default()
    };
    Guard::new()
        .connector(false, &tls, HTTP1, None)
        .expect("plain TCP needs no TLS file");
}

#[test]
fn tls_config_round_trips_and_refuses_unknown_fields() {
    let json = r#"{"ca_file":"/etc/ca.pem","cert_file":"/etc/c.pem","key_file":"/etc/c.key","server_name":"billing.internal"}"#;
    let tls: TlsConfig = serde_json::from_str(json).expect("parses");
    assert_eq!(serde_json::to_string(&tls).expect("writes"), json);
    let err = serde_json::from_str::<TlsConfig>(r#"{"insecure_skip_verify": true}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    assert!(TlsConfig::default().is_default());
    assert_eq!(tls.files().count(), 3);
}

/// The private key inside a PKCS#8 PEM, re-labelled: for RSA the inner key *is* PKCS#1's
/// `RSAPrivateKey`, for EC it is SEC1's `ECPrivateKey`. A minimal DER walk (definite lengths,
/// as PKCS#8 always has), so the test needs no ASN.1 crate.
fn inner_key_pem(pkcs8_pem: &str, label: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = pkcs8_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = b64.decode(body).expect("base64");
    // Returns (content start, content length) of the element at `at`.
    let element = |at: usize| -> (usize, usize) {
        let first = der[at + 1] as usize;
        if first < 0x80 {
            (at + 2, first)
        } else {
            let n = first & 0x7f;
            let len = der[at + 2..at + 2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (at + 2 + n, len)
        }
    };
    let (mut at, _) = element(0); // the outer SEQUENCE
    for _ in 0..2 {
        // skip the version INTEGER and the AlgorithmIdentifier SEQUENCE
        let (start, len) = element(at);
        at = start + len;
    }
    assert_eq!(der[at], 0x04, "the key OCTET STRING");
    let (start, len) = element(at);
    let wrapped = b64.encode(&der[start..start + len]);
    let lines: Vec<&str> = wrapped
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn client_keys_in_pkcs1_and_sec1_work_as_pkcs8_does() {
    let ca = TestCa::new("test CA");
    let clients = TestCa::new("client CA");
    let config = TestCa::server_config(&ca.server(&["127.0.0.1"]), Some(&clients));
    let upstream = HttpsServer::start(config, answer).await;
    let files = Files::new();
    let ca_file = files.ca(&ca);
    let rsa_pkcs8 = include_str!("fixtures/rsa-2048.pkcs8.pem");
    let rsa = clients.client_with_key("rsa-client", rsa_pkcs8);
    let ec = clients.client("ec-client");
    let cases = [
        ("RSA, PKCS#8", rsa.cert_pem.clone(), rsa.key_pem.clone()),
        (
            "RSA, PKCS#1",
            rsa.cert_pem.clone(),
            inner_key_pem(rsa_pkcs8, "RSA PRIVATE KEY"),
        ),
        ("EC, PKCS#8", ec.cert_pem.clone(), ec.key_pem.clone()),
        (
            "EC, SEC1",
            ec.cert_pem.clone(),
            inner_key_pem(&ec.key_pem, "EC PRIVATE KEY"),
        ),
    ];
    for (i, (format, cert, key)) in cases.into_iter().enumerate() {
        assert!(
            key.starts_with(match format {
                "RSA, PKCS#1" => "-----BEGIN RSA PRIVATE KEY-----",
                "EC, SEC1" => "-----BEGIN EC PRIVATE KEY-----",
                _ => "-----BEGIN PRIVATE KEY-----",
            }),
            "{format}"
        );
        let tls = TlsConfig {
            ca_file: Some(ca_file.clone()),
            cert_file: Some(files.write(&format!("client-{i}.pem"), &cert)),
            key_file: Some(files.write(&format!("client-{i}.key"), &key)),
            server_name: None,
        };
        let answer = post(connector(&tls), &upstream.url("/charge")).await;
        assert_eq!(
            answer.unwrap_or_else(|e| panic!("{format}: {e}")),
            "POST /charge with a client certificate: $100",
            "{format}"
        );
    }
}
