//! TLS for outbound connections, with rustls over ring: whom to trust (the system's roots or a
//! private CA), which name to verify, and which certificate to present (mTLS). There is no
//! option to skip verification.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

use crate::error::{AuthCode, CredentialError};

/// TLS settings for an outbound connection, as serde data (a route's `transport.tls`).
///
/// ```
/// use switchyard_client::TlsConfig;
///
/// let tls: TlsConfig = serde_json::from_str(r#"{
///     "ca_file": "/etc/billing/ca.pem",
///     "cert_file": "/etc/billing/client.pem",
///     "key_file": "/etc/billing/client.key",
///     "server_name": "billing.internal"
/// }"#).unwrap();
/// assert_eq!(tls.server_name.as_deref(), Some("billing.internal"));
/// // The files are read when the connector is built, not when the config is parsed.
/// let err = tls.client_config(&[b"http/1.1"]).unwrap_err();
/// assert_eq!(err.field(), "cert_file");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of one or more CA certificates to trust instead of the system's roots (for
    /// a private CA). Unset: the system's root store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate chain to present to servers that ask for one (mTLS). Needs
    /// `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for, and the SNI sent, instead of the
    /// endpoint's host (for an endpoint addressed by IP or by another name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Whether every field is unset: system roots, the endpoint's name, no client certificate.
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// The files this config reads, for noticing when one changes on disk.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .filter_map(|f| f.as_deref())
    }

    /// Checks what can be checked without reading files: a certificate and its key come
    /// together, and `server_name` is a DNS name or an IP address.
    ///
    /// # Errors
    ///
    /// [`AuthCode::MissingMtlsCerts`] naming `cert_file` or `key_file`, or naming
    /// `server_name`.
    pub fn validate(&self) -> Result<(), CredentialError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(CredentialError::new(
                    AuthCode::MissingMtlsCerts,
                    "key_file",
                    "a client certificate (`cert_file`) needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(CredentialError::new(
                    AuthCode::MissingMtlsCerts,
                    "cert_file",
                    "a private key (`key_file`) needs its certificate",
                ));
            }
            _ => {}
        }
        self.verified_name()?;
        Ok(())
    }

    /// The name to verify instead of the endpoint's host, parsed.
    ///
    /// # Errors
    ///
    /// `server_name` is neither a DNS name nor an IP address.
    pub fn verified_name(&self) -> Result<Option<ServerName<'static>>, CredentialError> {
        self.server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|_| {
                    CredentialError::new(
                        AuthCode::MissingMtlsCerts,
                        "server_name",
                        format!("{name:?} is neither a DNS name nor an IP address"),
                    )
                })
            })
            .transpose()
    }

    /// A rustls client config: the trusted roots, the client certificate if any, and the
    /// ALPN protocols to offer (`b"h2"`, `b"http/1.1"`). Reads the files now.
    ///
    /// # Errors
    ///
    /// A [`CredentialError`] ([`AuthCode::MissingMtlsCerts`]) naming the file's field: it
    /// cannot be read, holds no certificate or key, or the key does not match the
    /// certificate; or the system's root store is empty when no `ca_file` is given.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, CredentialError> {
        self.validate()?;
        // The files this config names first, so their errors come before the system's.
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((
                load_certificates(cert, "cert_file")?,
                load_private_key(key, "key_file")?,
            )),
            _ => None,
        };
        let roots = match &self.ca_file {
            Some(path) => private_roots(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                CredentialError::new(
                    AuthCode::MissingMtlsCerts,
                    "key_file",
                    format!("cannot be used with `cert_file`: {e}"),
                )
            })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// The certificates of a PEM file, at least one; an error names `field`. For servers too
/// (the gateway's own certificate).
///
/// # Errors
///
/// [`AuthCode::MissingMtlsCerts`]: the file cannot be read, is not PEM, or holds no
/// certificate.
pub fn load_certificates(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let unusable = |reason: String| {
        CredentialError::new(
            AuthCode::MissingMtlsCerts,
            field,
            format!("{}: {reason}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unusable(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(unusable("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1); an error names `field`.
///
/// # Errors
///
/// [`AuthCode::MissingMtlsCerts`]: the file cannot be read, is not PEM, or holds no
/// unencrypted key.
pub fn load_private_key(
    path: &Path,
    field: &'static str,
) -> Result<PrivateKeyDer<'static>, CredentialError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
            }
            other => pem_reason(&other),
        };
        CredentialError::new(
            AuthCode::MissingMtlsCerts,
            field,
            format!("{}: {reason}", path.display()),
        )
    })
}

fn pem_reason(err: &rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other})"),
    }
}

/// The CA certificates of `path` as the only roots.
fn private_roots(path: &Path) -> Result<RootCertStore, CredentialError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path, "ca_file")? {
        roots.add(cert).map_err(|e| {
            CredentialError::new(
                AuthCode::MissingMtlsCerts,
                "ca_file",
                format!("{}: not a usable CA certificate ({e})", path.display()),
            )
        })?;
    }
    Ok(roots)
}

/// The system's root store, read once per process.
fn system_roots() -> Result<RootCertStore, CredentialError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(target: "switchyard_client", %error, "a system root certificate could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(target: "switchyard_client", added, ignored, "system root certificates loaded");
        Arc::new(roots)
    });
    if roots.is_empty() {
        return Err(CredentialError::new(
            AuthCode::MissingMtlsCerts,
            "ca_file",
            "the system has no root certificates (install ca-certificates, set SSL_CERT_FILE, \
             or name a `ca_file`)",
        ));
    }
    Ok(RootCertStore::clone(roots))
}
