//! The `grpc` transport against a real tonic server on 127.0.0.1.
#![cfg(feature = "grpc")]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use switchyard_client::test_util::TestCa;
use switchyard_core::{RejectionKind, find_cause, find_rejection};
use switchyard_router::{
    FactoryFailed, GrpcTransport, RawCodec, RouteRow, Router, SsrfBlocked, UpstreamFailed,
};
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::transport::server::TcpIncoming;
use tonic::{Response, Status};
use tower::{BoxError, Service, ServiceExt, service_fn};

/// A schema-free gRPC service `echo.Echo` with methods `Say` (answers `said:` + the message)
/// and `Fail` (answers UNAVAILABLE).
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "echo.Echo";
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = Grpc::new(RawCodec);
            Ok(match req.uri().path() {
                "/echo.Echo/Say" => {
                    let say = service_fn(|req: tonic::Request<Bytes>| async move {
                        let mut said = b"said:".to_vec();
                        said.extend_from_slice(req.get_ref());
                        Ok::<_, Status>(Response::new(Bytes::from(said)))
                    });
                    grpc.unary(say, req).await
                }
                "/echo.Echo/Fail" => {
                    let fail = service_fn(|_: tonic::Request<Bytes>| async move {
                        Err::<Response<Bytes>, _>(Status::unavailable("echo is down"))
                    });
                    grpc.unary(fail, req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(Echo)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

/// A TLS stream tonic can serve: tonic's `Connected` is implemented for tokio-rustls' stream
/// only with a tonic TLS feature, which this workspace leaves off (see docs/architecture.md).
struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The echo server over TLS (ALPN `h2`), requiring client certificates from `clients` if given.
async fn tls_server(ca: &TestCa, clients: Option<&TestCa>) -> SocketAddr {
    let mut config = TestCa::server_config(&ca.server(&["127.0.0.1"]), clients);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Handshakes that fail are skipped; the server goes on.
    let incoming =
        futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
            loop {
                let (tcp, _) = listener.accept().await.ok()?;
                if let Ok(tls) = acceptor.accept(tcp).await {
                    return Some((Ok::<_, std::io::Error>(TlsConn(tls)), (listener, acceptor)));
                }
            }
        });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(Echo)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
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
async fn unary_calls_reach_a_tonic_server() {
    let addr = server().await;
    let router = Router::new();
    router.register_transport("grpc", GrpcTransport::new().allow_internal(true));
    router.reload(vec![
        RouteRow::new("say", "grpc").with_endpoint(format!("http://{addr}/echo.Echo/Say")),
        RouteRow::new("fail", "grpc").with_endpoint(format!("http://{addr}/echo.Echo/Fail")),
        RouteRow::new("missing", "grpc").with_endpoint(format!("http://{addr}/echo.Echo/Nope")),
        RouteRow::new("closed", "grpc").with_endpoint("http://127.0.0.1:1/echo.Echo/Say"),
    ]);
    assert_eq!(call(&router, "say", "hi").await.unwrap(), "said:hi");
    assert_eq!(call(&router, "say", "again").await.unwrap(), "said:again");

    for (name, says) in [
        ("fail", "echo is down"),
        ("missing", "no such method"),
        ("closed", "upstream of closed failed"),
    ] {
        let err = call(&router, name, "x").await.unwrap_err();
        assert!(
            find_cause::<UpstreamFailed>(&*err).is_some(),
            "{name}: {err}"
        );
        assert_eq!(kind(&err), RejectionKind::UpstreamFailed, "{name}");
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
    let err = call(&router, "fail", "x").await.unwrap_err();
    let status = find_cause::<Status>(&*err).expect("the status is the cause");
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn the_ssrf_guard_and_bad_endpoints_break_only_their_route() {
    let addr = server().await;
    let router = Router::new();
    router.reload(vec![
        RouteRow::new("literal", "grpc").with_endpoint(format!("http://{addr}/echo.Echo/Say")),
        RouteRow::new("named", "grpc")
            .with_endpoint(format!("http://localhost:{}/echo.Echo/Say", addr.port())),
        RouteRow::new("no-method", "grpc").with_endpoint("http://example.com/"),
        RouteRow::new("no-endpoint", "grpc"),
        RouteRow::new("tls", "grpc")
            .with_endpoint("https://example.com/a.B/C")
            .with_config(r#"{"transport": {"tls": {"cert_file": "/etc/client.pem"}}}"#),
        RouteRow::new("options", "grpc")
            .with_endpoint("http://example.com/a.B/C")
            .with_config(r#"{"transport": {"tls": true}}"#),
    ]);
    for (name, says) in [
        ("literal", "loopback"),
        ("no-method", "expected a path /package.Service/Method"),
        ("no-endpoint", "needs an endpoint"),
        ("tls", "AUTH_1104 invalid `transport.tls.key_file`"),
        ("options", "expected struct TlsConfig"),
    ] {
        let err = call(&router, name, "x").await.unwrap_err();
        assert!(
            find_cause::<FactoryFailed>(&*err).is_some(),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(says), "{name}: {err}");
        assert_eq!(kind(&err), RejectionKind::RouteUnavailable, "{name}");
    }
    // A name is checked on its resolved addresses, when the channel connects.
    let err = call(&router, "named", "x").await.unwrap_err();
    assert!(find_cause::<SsrfBlocked>(&*err).is_some(), "{err}");
    assert_eq!(kind(&err), RejectionKind::RouteUnavailable);
}

#[tokio::test]
async fn unary_calls_reach_a_tonic_server_over_tls_and_mtls() {
    let ca = TestCa::new("test CA");
    let clients = TestCa::new("client CA");
    let tls = tls_server(&ca, None).await;
    let mtls = tls_server(&ca, Some(&clients)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let (cert_file, key_file) = clients.client("gateway").write(dir.path(), "client");
    let with = |endpoint: String, tls: serde_json::Value| {
        RouteRow::new("x", "grpc")
            .with_endpoint(endpoint)
            .with_config(serde_json::json!({ "transport": { "tls": tls } }).to_string())
    };
    let router = Router::new();
    router.register_transport("grpc", GrpcTransport::new().allow_internal(true));
    let mut tls_row = with(
        format!("https://{tls}/echo.Echo/Say"),
        serde_json::json!({ "ca_file": ca_file }),
    );
    tls_row.service_name = "tls".into();
    let mut mtls_row = with(
        format!("https://{mtls}/echo.Echo/Say"),
        serde_json::json!({ "ca_file": ca_file, "cert_file": cert_file, "key_file": key_file }),
    );
    mtls_row.service_name = "mtls".into();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::new("another CA").cert_pem()).unwrap();
    let mut untrusted_row = with(
        format!("https://{tls}/echo.Echo/Say"),
        serde_json::json!({ "ca_file": other_ca }),
    );
    untrusted_row.service_name = "untrusted".into();
    router.reload(vec![tls_row, mtls_row, untrusted_row]);

    assert_eq!(call(&router, "tls", "hi").await.unwrap(), "said:hi");
    assert_eq!(call(&router, "mtls", "hi").await.unwrap(), "said:hi");
    // Trusting another CA only.
    let err = call(&router, "untrusted", "hi").await.unwrap_err();
    let failed = find_cause::<switchyard_router::TlsFailed>(&*err)
        .unwrap_or_else(|| panic!("a TLS failure in {err:?}"));
    assert_eq!(
        failed.failure(),
        switchyard_router::TlsFailure::UnknownIssuer
    );
    assert_eq!(failed.service(), Some("untrusted"));
    assert_eq!(kind(&err), RejectionKind::UpstreamFailed);
}
