//! HTTPS for the gateway: the certificate pair (and, for mTLS, the client CA) read into a
//! rustls server config, swapped in when the files change, and an accept loop serving HTTP/1.1
//! and HTTP/2 (by ALPN) with graceful shutdown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Serialize;
use switchyard_client::{CredentialError, load_certificates, load_private_key};
use switchyard_core::unix_now;
use tokio::net::TcpListener;
use tower::BoxError;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of the gateway's HTTPS: its certificate chain and key, and the CA client
/// certificates must be signed by (mTLS) when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The PEM certificate chain (`--tls-cert`).
    pub cert: PathBuf,
    /// Its PEM private key: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: PathBuf,
    /// A PEM file of the CA(s) client certificates must chain to (`--tls-client-ca`); unset,
    /// no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
    }

    /// A digest of each file's bytes, to notice a change (renewals keep the name and change
    /// the content). Only the digest is kept: the key's bytes stay out of memory dumps and
    /// `Debug` output.
    fn contents(&self) -> Vec<Option<(u64, usize)>> {
        self.paths()
            .map(|p| {
                std::fs::read(p).ok().map(|bytes| {
                    let mut hasher = std::hash::DefaultHasher::new();
                    std::hash::Hash::hash(&bytes, &mut hasher);
                    (std::hash::Hasher::finish(&hasher), bytes.len())
                })
            })
            .collect()
    }

    /// A server config from the files as they are now.
    fn load(&self) -> Result<ServerConfig, CredentialError> {
        let chain = load_certificates(&self.cert, "tls_cert")?;
        let key = load_private_key(&self.key, "tls_key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match &self.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in load_certificates(path, "tls_client_ca")? {
                    roots.add(cert).map_err(|e| unusable("tls_client_ca", e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| unusable("tls_client_ca", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| unusable("tls_key", e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn unusable(field: &'static str, err: impl std::fmt::Display) -> CredentialError {
    CredentialError::new(
        switchyard_client::AuthCode::MissingMtlsCerts,
        field,
        format!("cannot be used: {err}"),
    )
}

/// What `/status` says of the gateway's HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsStatus {
    /// The certificate file served.
    pub cert_file: String,
    /// Whether client certificates are required.
    pub client_auth: bool,
    /// Unix seconds of the last (re)load that took effect.
    pub loaded_at: u64,
    /// Why the files on disk are not the ones served, when a reload failed: the previous pair
    /// keeps serving.
    pub last_error: Option<String>,
}

/// The gateway's HTTPS: the config served now, and what is needed to reload it.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: ArcSwap<ServerConfig>,
    seen: Mutex<Vec<Option<(u64, usize)>>>,
    status: Mutex<TlsStatus>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files.
    ///
    /// # Errors
    ///
    /// A file is missing or does not parse, or the key does not match the certificate.
    pub fn load(files: ServerTlsFiles) -> Result<Self, CredentialError> {
        let seen = files.contents();
        let config = files.load()?;
        let status = TlsStatus {
            cert_file: files.cert.display().to_string(),
            client_auth: files.client_ca.is_some(),
            loaded_at: unix_now(),
            last_error: None,
        };
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
            status: Mutex::new(status),
        })
    }

    /// Reloads the files if their content changed since the last look. A pair that does not
    /// load keeps the previous one serving, and is reported in [`status`](Self::status) and
    /// the logs. Returns whether a new config took effect.
    pub fn reload_if_changed(&self) -> bool {
        let now = self.files.contents();
        {
            let mut seen = switchyard_core::sync::lock(&self.seen);
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match self.files.load() {
            Ok(config) => {
                self.current.store(Arc::new(config));
                let mut status = switchyard_core::sync::lock(&self.status);
                status.loaded_at = unix_now();
                status.last_error = None;
                tracing::info!(cert = %self.files.cert.display(), "reloaded the gateway's TLS certificate");
                true
            }
            Err(error) => {
                tracing::error!(%error, "the gateway's new TLS files do not load; the previous certificate keeps serving");
                switchyard_core::sync::lock(&self.status).last_error = Some(error.to_string());
                false
            }
        }
    }

    /// What `/status` says of it.
    pub fn status(&self) -> TlsStatus {
        switchyard_core::sync::lock(&self.status).clone()
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then waits for the
/// connections in flight for at most `grace`. Each connection takes the config current when it
/// is accepted, so a reload applies to new connections and never cuts one.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), BoxError> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: pause instead of spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = tls.acceptor();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!(
            ?grace,
            "requests still in flight after the grace period; stopping anyway"
        ),
    }
    Ok(())
}
