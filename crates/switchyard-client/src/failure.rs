//! A TLS handshake that failed, told apart by its cause.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError};
use switchyard_core::{Rejection, RejectionKind};

/// Why a TLS handshake with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate is not signed by a trusted CA.
    UnknownIssuer,
    /// The server's certificate is not valid for the name asked for.
    NameMismatch,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet.
    NotYetValid,
    /// The server wants a client certificate and none was presented.
    ClientCertificateRequired,
    /// The server refused the client certificate presented.
    ClientCertificateRejected,
    /// Another TLS failure (no common protocol version or ALPN protocol, a bad record...).
    Other,
}

impl TlsFailure {
    /// A stable snake_case name, for logs and status pages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownIssuer => "unknown_issuer",
            Self::NameMismatch => "name_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::ClientCertificateRequired => "client_certificate_required",
            Self::ClientCertificateRejected => "client_certificate_rejected",
            Self::Other => "other",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::UnknownIssuer => "the server's certificate is signed by an unknown CA",
            Self::NameMismatch => "the server's certificate is not valid for its name",
            Self::Expired => "the server's certificate has expired",
            Self::NotYetValid => "the server's certificate is not valid yet",
            Self::ClientCertificateRequired => "the server requires a client certificate",
            Self::ClientCertificateRejected => "the server refused the client certificate",
            Self::Other => "the TLS handshake failed",
        }
    }

    fn of(err: &rustls::Error) -> Self {
        use rustls::Error as E;
        match err {
            E::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => Self::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::NameMismatch,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                _ => Self::Other,
            },
            E::AlertReceived(AlertDescription::CertificateRequired) => {
                Self::ClientCertificateRequired
            }
            E::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied,
            ) => Self::ClientCertificateRejected,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TLS handshake with an upstream failed: which route, why ([`TlsFailure`]), and rustls'
/// own words. Maps to 502 / `UNAVAILABLE` (the upstream answered, but not as it must).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailed {
    failure: TlsFailure,
    detail: String,
    service: Option<Arc<str>>,
}

impl TlsFailed {
    /// The TLS failure somewhere in `err`'s chain (through the `io::Error`s hyper and
    /// tokio-rustls wrap it in), if there is one.
    pub fn find(err: &(dyn Error + 'static)) -> Option<Self> {
        let tls = find_rustls_error(err)?;
        Some(Self {
            failure: TlsFailure::of(tls),
            detail: tls.to_string(),
            service: None,
        })
    }

    /// The same failure, naming the route (or plugin) whose call it was.
    #[must_use]
    pub fn for_service(mut self, service: Arc<str>) -> Self {
        self.service = Some(service);
        self
    }

    /// Why.
    pub fn failure(&self) -> TlsFailure {
        self.failure
    }

    /// The route whose call failed, when known.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }
}

impl fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(service) = &self.service {
            write!(f, "route {service}: ")?;
        }
        write!(f, "{} ({})", self.failure.describe(), self.detail)
    }
}

impl Error for TlsFailed {}

impl Rejection for TlsFailed {
    fn kind(&self) -> RejectionKind {
        RejectionKind::UpstreamFailed
    }

    fn subject(&self) -> Option<&str> {
        self.service.as_deref()
    }
}

/// The `rustls::Error` in `err`'s chain. `io::Error::source` skips the error it wraps, so
/// each `io::Error` is opened with `get_ref` instead.
fn find_rustls_error<'a>(mut err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            err = inner;
            continue;
        }
        err = err.source()?;
    }
}
