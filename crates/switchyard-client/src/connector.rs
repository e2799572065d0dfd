//! The outbound connector every client transport shares: TCP to the addresses the SSRF guard
//! lets through, then TLS (rustls) for `https` endpoints.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use tower::BoxError;

use crate::error::CredentialError;
use crate::ssrf::{GuardedResolver, Resolver, check_literal_host, system_resolver};
use crate::tls::TlsConfig;

/// The connector a transport's client is built on: plain TCP for `http` URIs and TLS for
/// `https` ones, both only to the addresses the SSRF guard lets through.
pub type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// How outbound connections are made: whether internal addresses may be reached, and which
/// resolver finds the others. Every client transport builds its connector here
/// ([`Guard::connector`]), so the SSRF guard and TLS are the same everywhere.
///
/// ```
/// use switchyard_client::{Guard, TlsConfig};
///
/// let guard = Guard::new();
/// assert!(guard.endpoint("http://10.0.0.5/charge", "http://host/path").is_err());
/// let uri = guard.endpoint("https://billing.example.com/charge", "http://host/path")?;
/// assert_eq!(uri.scheme_str(), Some("https"));
/// // Plain TCP reads no file; TLS reads the config's files (or the system's roots) now.
/// let _plain = guard.connector(false, &TlsConfig::default(), &[], None)?;
/// # Ok::<(), tower::BoxError>(())
/// ```
#[derive(Clone)]
pub struct Guard {
    allow_internal: bool,
    resolver: Resolver,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            allow_internal: false,
            resolver: system_resolver(),
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("allow_internal", &self.allow_internal)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// The guard on, with the system's resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether endpoints may be internal (loopback, private...): for trusted calls between
    /// services on one machine or network. Off by default.
    #[must_use]
    pub fn allow_internal(mut self, allow: bool) -> Self {
        self.allow_internal = allow;
        self
    }

    /// Whether internal endpoints are allowed.
    pub fn internal_allowed(&self) -> bool {
        self.allow_internal
    }

    /// Resolves host names with `resolver` instead of the system's. The guard applies to what
    /// it returns.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// An endpoint URL, parsed and checked: `http` or `https`, with a host that is not an
    /// internal IP literal unless allowed. `shape` says what is expected, for the error.
    ///
    /// # Errors
    ///
    /// The URL does not parse, has another scheme or no host, or is refused by the guard
    /// ([`SsrfBlocked`](crate::SsrfBlocked)).
    pub fn endpoint(&self, endpoint: &str, shape: &str) -> Result<Uri, BoxError> {
        // The URL as errors show it: credentials in it masked.
        let shown = || redact_url(endpoint);
        let uri = Uri::from_str(endpoint).map_err(|e| format!("invalid URL {:?}: {e}", shown()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("invalid URL {:?}: expected {shape}", shown()).into());
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("invalid URL {:?}: no host", shown()))?;
        check_literal_host(host, self.allow_internal)?;
        Ok(uri)
    }

    /// A connector for one client: TCP (no Nagle, `connect_timeout` if given) to guarded
    /// addresses, and, when `tls` is true, TLS by `config` offering `alpn`. With `tls` false
    /// the connector speaks plain TCP only and reads no file.
    ///
    /// # Errors
    ///
    /// The TLS config cannot work ([`TlsConfig::client_config`]).
    pub fn connector(
        &self,
        tls: bool,
        config: &TlsConfig,
        alpn: &[&[u8]],
        connect_timeout: Option<Duration>,
    ) -> Result<Connector, CredentialError> {
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver::new(
            self.resolver.clone(),
            self.allow_internal,
        ));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(connect_timeout);
        if !tls {
            return Ok(HttpsConnector::new(
                tcp,
                plaintext_only(),
                false,
                Arc::new(DefaultServerNameResolver::default()),
            ));
        }
        let client = config.client_config(alpn)?;
        let names: Arc<dyn ResolveServerName + Send + Sync> = match config.verified_name()? {
            Some(name) => Arc::new(FixedServerNameResolver::new(name)),
            None => Arc::new(DefaultServerNameResolver::default()),
        };
        let mut connector = HttpsConnector::new(tcp, client, true, names);
        connector.enforce_https();
        Ok(connector)
    }
}

/// The TLS config of a connector built for plain `http`: it trusts nothing, so an `https`
/// URI sent through it by mistake fails its handshake instead of connecting unverified.
fn plaintext_only() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        )
    }))
}

/// A URL as status pages, logs and errors show it: user information and query string, which
/// may hold credentials, masked (`***`).
///
/// ```
/// use switchyard_client::redact_url;
///
/// assert_eq!(redact_url("https://ann:pw@billing.example.com/charge?key=k"),
///     "https://***@billing.example.com/charge?***");
/// assert_eq!(redact_url("https://billing.example.com/charge"), "https://billing.example.com/charge");
/// ```
pub fn redact_url(endpoint: &str) -> String {
    let Ok(uri) = endpoint.parse::<Uri>() else {
        return "(unparsable)".to_owned();
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return uri.path().to_owned();
    };
    if !authority.as_str().contains('@') && uri.query().is_none() {
        return endpoint.to_owned();
    }
    let host = authority.as_str().rsplit('@').next().unwrap_or_default();
    let user = if authority.as_str().contains('@') {
        "***@"
    } else {
        ""
    };
    let query = if uri.query().is_some() { "?***" } else { "" };
    format!("{scheme}://{user}{host}{}{query}", uri.path())
}
