//! Test helpers (feature `test-util`): a CA that issues certificates on the spot, and an
//! HTTPS server on 127.0.0.1 answering with a function, for tests of every TLS transport.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A certificate authority made for one test: it issues server and client certificates for
/// 127.0.0.1 and names, valid now or expired.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM (the key as PKCS#8).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    ///
    /// # Panics
    ///
    /// If rcgen cannot make a key or sign (it always can with ring).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// The CA's certificate, as PEM: what a client trusts (`ca_file`).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now.
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// A client certificate for `name`, valid now.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    /// A client certificate for `name` whose key is `key_pem` (PKCS#8 PEM, RSA or EC: rcgen
    /// makes only EC keys, so an RSA key comes from a file).
    ///
    /// # Panics
    ///
    /// If `key_pem` is not a PKCS#8 key ring can sign with.
    pub fn client_with_key(&self, name: &str, key_pem: &str) -> Issued {
        let key = KeyPair::from_pem(key_pem).expect("a PKCS#8 key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("a valid name");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("a signature");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key_pem.to_owned(),
        }
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid names");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a signature");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls server config presenting `issued`, offering HTTP/1.1 by ALPN, and requiring
    /// client certificates signed by `client_ca` when given.
    ///
    /// # Panics
    ///
    /// If `issued` does not parse (it always does when this CA made it).
    pub fn server_config(issued: &Issued, client_ca: Option<&TestCa>) -> ServerConfig {
        Self::server_config_with(issued, client_ca, rustls::DEFAULT_VERSIONS)
    }

    /// [`server_config`](Self::server_config) speaking only `versions` (TLS 1.2 alone, say).
    ///
    /// # Panics
    ///
    /// As `server_config`, or if ring cannot speak `versions`.
    pub fn server_config_with(
        issued: &Issued,
        client_ca: Option<&TestCa>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .expect("supported versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).expect("the CA");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("a verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("the certificate");
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("the key");
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("a server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl Issued {
    /// Writes the certificate and key to `dir/<stem>.pem` and `dir/<stem>.key`.
    ///
    /// # Panics
    ///
    /// If the files cannot be written.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (cert, key)
    }
}

/// What a request looked like to [`HttpsServer`]'s handler.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request's head (method, path, headers).
    pub parts: http::request::Parts,
    /// Its body.
    pub body: Bytes,
    /// Whether the client presented a certificate.
    pub client_certificate: bool,
}

/// An HTTPS server on 127.0.0.1 answering every request with a function; stopped when
/// dropped. HTTP/1.1 only.
#[derive(Debug)]
pub struct HttpsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpsServer {
    /// Serves `config` on a free port, each request answered by `answer`. A failed handshake
    /// closes its connection and the server goes on.
    ///
    /// # Panics
    ///
    /// If no port can be bound on 127.0.0.1.
    pub async fn start<F>(config: ServerConfig, answer: F) -> Self
    where
        F: Fn(Seen) -> http::Response<String> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_certificate = tls.get_ref().1.peer_certificates().is_some();
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let answer = Arc::clone(&answer);
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await?.to_bytes();
                                let response = answer(Seen {
                                    parts,
                                    body,
                                    client_certificate,
                                });
                                Ok::<_, hyper::Error>(response.map(|b| Full::new(Bytes::from(b))))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
