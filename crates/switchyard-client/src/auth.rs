//! Credentials on outbound requests: an API key, a bearer token, basic credentials, custom
//! headers, or a client certificate (mTLS), as data. Secrets may be named by an environment
//! variable instead of written in the config.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use crate::error::{AuthCode, CredentialError};
use crate::tls::TlsConfig;

/// How an outbound call proves who it is, as serde data (a route's `transport.auth`).
///
/// `method` is one of `none` (the default), `api_key` (`X-API-Key`), `bearer`
/// (`Authorization: Bearer`), `basic` (`Authorization: Basic`), `mtls` (a client certificate:
/// `cert_file`, `key_file`, optionally `ca_file`) and `custom` (the `headers` map as given).
/// Each secret can be given in the config (`api_key`, `token`, `password`) or, better, named
/// by an environment variable read when the route is built (`api_key_env`, `token_env`,
/// `password_env`), so it never sits in the routes table in clear.
///
/// `Debug` masks the secrets; `Serialize` writes the config back as it was given, secrets
/// included, because its output is a config (to store or send where the input came from), not
/// a report: never log it.
///
/// ```
/// use switchyard_client::AuthConfig;
///
/// let auth: AuthConfig = serde_json::from_str(r#"{ "method": "bearer", "token": "t0k3n" }"#)?;
/// let headers = auth.headers()?;
/// let mut request = http::Request::new(());
/// headers.apply(request.headers_mut());
/// assert_eq!(request.headers()["authorization"], "Bearer t0k3n");
/// // Secrets never show in Debug output.
/// assert!(!format!("{auth:?} {headers:?}").contains("t0k3n"));
///
/// let err = serde_json::from_str::<AuthConfig>(r#"{ "method": "bearer" }"#)?
///     .headers()
///     .unwrap_err();
/// assert_eq!((err.code().as_str(), err.field()), ("AUTH_1102", "token"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none`, `api_key`, `bearer`, `basic`, `mtls` or `custom`. Any other is `AUTH_1105`.
    pub method: String,
    /// The API key (`api_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The environment variable holding the API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The bearer token (`bearer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The environment variable holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The user name (`basic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (`basic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The client certificate (`mtls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Its private key (`mtls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The CA to verify the server with (`mtls`), instead of the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Headers to send as given (`custom`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("AuthConfig")
            .field("method", &self.method)
            .field("api_key", &secret(&self.api_key))
            .field("api_key_env", &self.api_key_env)
            .field("token", &secret(&self.token))
            .field("token_env", &self.token_env)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("password_env", &self.password_env)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("ca_file", &self.ca_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Headers a `custom` auth may not set: the transport frames the request with them.
const FRAMING: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "te",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "content-type",
];

/// The methods, as written in configs.
const METHODS: [&str; 6] = ["none", "api_key", "bearer", "basic", "mtls", "custom"];

impl AuthConfig {
    /// The method, `none` when unset.
    pub fn method(&self) -> &str {
        if self.method.is_empty() {
            "none"
        } else {
            &self.method
        }
    }

    /// The headers every request carries under this config, secrets read (from the config or
    /// the environment) now. `none` and `mtls` add none.
    ///
    /// # Errors
    ///
    /// `AUTH_1105` for an unknown method; `AUTH_1101`–`AUTH_1103` for a missing secret (unset,
    /// empty, or its environment variable unset); `AUTH_1104` for `mtls` without its files;
    /// a header that is not a valid HTTP header names its field.
    pub fn headers(&self) -> Result<AuthHeaders, CredentialError> {
        let mut headers = Vec::new();
        match self.method() {
            "none" => {}
            "api_key" => {
                let key = secret(
                    self.api_key.as_deref(),
                    self.api_key_env.as_deref(),
                    AuthCode::MissingApiKey,
                    "api_key",
                )?;
                headers.push((
                    HeaderName::from_static("x-api-key"),
                    sensitive(&key, "api_key")?,
                ));
            }
            "bearer" => {
                let token = secret(
                    self.token.as_deref(),
                    self.token_env.as_deref(),
                    AuthCode::MissingBearerToken,
                    "token",
                )?;
                let value = sensitive(&format!("Bearer {token}"), "token")?;
                headers.push((header::AUTHORIZATION, value));
            }
            "basic" => {
                let username = self.username.as_deref().filter(|u| !u.is_empty());
                let username = username.ok_or_else(|| {
                    CredentialError::new(
                        AuthCode::MissingBasicCredentials,
                        "username",
                        "basic auth needs a username",
                    )
                })?;
                let password = secret(
                    self.password.as_deref(),
                    self.password_env.as_deref(),
                    AuthCode::MissingBasicCredentials,
                    "password",
                )?;
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let value = sensitive(&format!("Basic {encoded}"), "password")?;
                headers.push((header::AUTHORIZATION, value));
            }
            "mtls" => {
                self.tls()?;
            }
            "custom" => {
                if self.headers.is_empty() {
                    return Err(CredentialError::new(
                        AuthCode::UnsupportedMethod,
                        "headers",
                        "custom auth needs at least one header",
                    ));
                }
                for (name, value) in &self.headers {
                    let field = format!("headers.{name}");
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        CredentialError::new(
                            AuthCode::UnsupportedMethod,
                            field.clone(),
                            "not a valid HTTP header name",
                        )
                    })?;
                    if FRAMING.contains(&name.as_str()) {
                        return Err(CredentialError::new(
                            AuthCode::UnsupportedMethod,
                            field,
                            "a connection or framing header, which the transport sets itself",
                        ));
                    }
                    let value = HeaderValue::from_str(value)
                        .map(|mut v| {
                            v.set_sensitive(true);
                            v
                        })
                        .map_err(|_| {
                            CredentialError::new(
                                AuthCode::UnsupportedMethod,
                                field,
                                "not a valid HTTP header value",
                            )
                        })?;
                    headers.push((name, value));
                }
            }
            other => {
                return Err(CredentialError::new(
                    AuthCode::UnsupportedMethod,
                    "method",
                    format!(
                        "unknown auth method {other:?}: expected one of {}",
                        METHODS.join(", ")
                    ),
                ));
            }
        }
        Ok(AuthHeaders {
            headers: headers.into(),
        })
    }

    /// The TLS settings `mtls` stands for (`cert_file`, `key_file`, `ca_file`); `None` for
    /// the other methods.
    ///
    /// # Errors
    ///
    /// `AUTH_1104` when `mtls` lacks `cert_file` or `key_file`.
    pub fn tls(&self) -> Result<Option<TlsConfig>, CredentialError> {
        if self.method() != "mtls" {
            return Ok(None);
        }
        for (field, value) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if value.is_none() {
                return Err(CredentialError::new(
                    AuthCode::MissingMtlsCerts,
                    field,
                    "mtls auth needs `cert_file` and `key_file`",
                ));
            }
        }
        Ok(Some(TlsConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: None,
        }))
    }
}

/// A secret from the config or from the environment variable it names.
fn secret(
    given: Option<&str>,
    env: Option<&str>,
    code: AuthCode,
    field: &'static str,
) -> Result<String, CredentialError> {
    if let Some(value) = given.filter(|v| !v.is_empty()) {
        return Ok(value.to_owned());
    }
    match env {
        Some(var) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(value),
            _ => Err(CredentialError::new(
                code,
                format!("{field}_env"),
                format!("the environment variable {var} is unset or empty"),
            )),
        },
        None => Err(CredentialError::new(
            code,
            field,
            format!("needs `{field}` or `{field}_env`"),
        )),
    }
}

/// A header value marked sensitive (kept out of HTTP/2 header compression tables and of
/// `Debug` output); an invalid one names `field`, never its content.
fn sensitive(value: &str, field: &'static str) -> Result<HeaderValue, CredentialError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        CredentialError::new(
            AuthCode::UnsupportedMethod,
            field,
            "holds characters an HTTP header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The headers an [`AuthConfig`] adds to every request, ready to apply. Cheap to clone.
#[derive(Clone, Default)]
pub struct AuthHeaders {
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl AuthHeaders {
    /// Sets each header on `headers`, replacing any of the same name.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The headers' names and values, for transports that carry them another way (gRPC
    /// metadata).
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.headers.iter().map(|(n, v)| (n, v))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}

impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.headers.iter().map(|(name, _)| format!("{name}: ***")))
            .finish()
    }
}

/// Adds an [`AuthConfig`]'s headers to every `http::Request` ([`Authorized`]).
///
/// One layer for every method, whose headers are data: tower-http's `SetRequestHeaderLayer`
/// sets one header per layer, and its `AddAuthorizationLayer` covers only basic and bearer, so
/// a stack built from config would change type with the method.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    headers: AuthHeaders,
}

impl AuthLayer {
    /// The layer for `config`, its secrets read now.
    ///
    /// # Errors
    ///
    /// As [`AuthConfig::headers`].
    pub fn new(config: &AuthConfig) -> Result<Self, CredentialError> {
        Ok(Self {
            headers: config.headers()?,
        })
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized {
            inner,
            headers: self.headers.clone(),
        }
    }
}

/// A service whose requests carry an [`AuthConfig`]'s headers. Built by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    headers: AuthHeaders,
}

impl<S, B> Service<Request<B>> for Authorized<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.headers.apply(request.headers_mut());
        self.inner.call(request)
    }
}
