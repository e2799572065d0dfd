//! The `http` transport: POSTs the payload to the route's endpoint (`http` or `https`) with
//! hyper-util's pooled client, over switchyard-client's connector: the SSRF guard checks the
//! addresses actually connected to, and rustls does TLS.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use switchyard_client::{
    AuthConfig, AuthHeaders, Connector, Guard, Resolver, SsrfBlocked, TlsConfig, TlsFailed,
};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use crate::error::UpstreamFailed;
use crate::transport::{RouteService, RouteSpec, TransportFactory};

/// How long an idle pooled connection stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A remote route's endpoint, parsed and checked by the SSRF guard: present, an `http` or
/// `https` URL with a host, and not an internal IP literal unless allowed. `shape` says what
/// the strategy expects, for the error.
pub(crate) fn route_endpoint(
    guard: &Guard,
    spec: &RouteSpec<'_>,
    shape: &str,
) -> Result<Uri, BoxError> {
    let endpoint = spec
        .endpoint
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| format!("the {} strategy needs an endpoint: {shape}", spec.strategy))?;
    guard.endpoint(endpoint, shape)
}

/// The TLS side of a route's connector: `https` endpoints use `tls` (system roots unless it
/// names a CA), and `http` ones may not carry TLS settings, which would do nothing.
pub(crate) fn route_connector(
    guard: &Guard,
    uri: &Uri,
    tls: &TlsConfig,
    alpn: &[&[u8]],
    connect_timeout: Option<Duration>,
) -> Result<Connector, BoxError> {
    let https = uri.scheme_str() == Some("https");
    if !https && !tls.is_default() {
        return Err(format!(
            "invalid `transport.tls`: TLS settings need an https endpoint, not {}",
            switchyard_client::redact_url(&uri.to_string())
        )
        .into());
    }
    Ok(guard
        .connector(https, tls, alpn, connect_timeout)
        .map_err(|e| e.within("transport.tls"))?)
}

/// A route's credentials: the headers its `transport.auth` adds, and the TLS settings once an
/// `mtls` auth's files are merged into `transport.tls`.
///
/// Header credentials on an `http://` endpoint would travel in clear: refused unless the
/// transport allows internal targets (a trusted network).
pub(crate) fn route_credentials(
    guard: &Guard,
    uri: &Uri,
    tls: &TlsConfig,
    auth: &AuthConfig,
) -> Result<(TlsConfig, AuthHeaders), BoxError> {
    let within = |e: switchyard_client::CredentialError| e.within("transport.auth");
    let headers = auth.headers().map_err(within)?;
    if !headers.is_empty() && uri.scheme_str() != Some("https") && !guard.internal_allowed() {
        return Err(format!(
            "invalid `transport.auth`: {} credentials would travel in clear to {}; use an \
             https endpoint (or allow internal targets, for a trusted network)",
            auth.method(),
            switchyard_client::redact_url(&uri.to_string())
        )
        .into());
    }
    let Some(mtls) = auth.tls().map_err(within)? else {
        return Ok((tls.clone(), headers));
    };
    if tls.ca_file.is_some() && mtls.ca_file.is_some() {
        return Err(
            "invalid `transport.auth.ca_file`: `transport.tls.ca_file` names the CA \
                    already; keep one"
                .into(),
        );
    }
    if tls.cert_file.is_some() || tls.key_file.is_some() {
        return Err(
            "invalid `transport.auth`: an mtls auth and `transport.tls.cert_file` both \
                    name a client certificate; keep one"
                .into(),
        );
    }
    let merged = TlsConfig {
        ca_file: tls.ca_file.clone().or(mtls.ca_file),
        cert_file: mtls.cert_file,
        key_file: mtls.key_file,
        server_name: tls.server_name.clone(),
    };
    Ok((merged, headers))
}

/// A route's `transport` options, read with serde; an error names the field by its path and,
/// under `auth`, does not repeat the value ([`switchyard_client::withhold_secret_values`]).
pub(crate) fn transport_options<T: serde::de::DeserializeOwned>(
    options: &serde_json::Value,
) -> Result<T, BoxError> {
    switchyard_core::config::deserialize::<T, _>(options.clone(), "transport").map_err(|e| {
        let e = switchyard_client::withhold_secret_values(e);
        let path = match e.field() {
            "transport" => "transport".to_owned(),
            field => format!("transport.{field}"),
        };
        format!("invalid transport options: `{path}`: {}", e.reason()).into()
    })
}

/// A failed call's error, typed: the SSRF guard's refusal or a TLS failure when one caused it,
/// else the upstream failure.
pub(crate) fn call_failed(service: &Arc<str>, err: BoxError) -> BoxError {
    if let Some(blocked) = switchyard_core::find_cause::<SsrfBlocked>(&*err) {
        return Box::new(blocked.clone().for_service(Arc::clone(service)));
    }
    if let Some(tls) = TlsFailed::find(&*err) {
        return Box::new(tls.for_service(Arc::clone(service)));
    }
    Box::new(UpstreamFailed::error(Arc::clone(service), err))
}

// === impl HttpTransport: the factory ===

/// The `http` transport factory: each route's calls are POSTed to its endpoint, the payload as
/// the request body and the response body as the answer.
///
/// Route options (the config's `transport` object):
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `content_type` | `application/octet-stream` | the request's `Content-Type` |
/// | `max_response_bytes` | 4194304 (4 MiB) | a longer response fails the call |
/// | `connect_timeout` | `"10s"` | how long connecting may take |
/// | `tls` | system roots | for `https` endpoints: `ca_file`, `cert_file` + `key_file` (mTLS), `server_name` ([`TlsConfig`]) |
/// | `auth` | none | credentials on every request: `api_key`, `bearer`, `basic`, `custom` headers, or `mtls` ([`AuthConfig`]) |
///
/// The route's deadline is its config's `timeout` (the resilience stack's), which fails a call
/// with [`TimedOut`](switchyard_resilience::TimedOut). A non-2xx answer, a refused connection or an
/// oversized response fails it with [`UpstreamFailed`].
///
/// **SSRF guard.** Unless [`allow_internal`](Self::allow_internal) is set, an endpoint whose host
/// is an internal address ([`internal_reason`](crate::internal_reason)) is refused when the route
/// is built, and a host *name* is checked on every address it resolves to when a connection is
/// made, so DNS rebinding cannot reach an internal address either, for `https` as for `http`.
///
/// **TLS.** An `https` endpoint is verified against the system's root store, or the
/// `tls.ca_file` CA; a `tls.cert_file` + `tls.key_file` pair is presented to servers that ask
/// for a client certificate. A handshake that fails is a [`TlsFailed`] naming the route and
/// the cause (502); a TLS file that cannot be used breaks the route with its `AUTH_1104` error.
///
/// Each route has its own connection pool, dropped with the route; idle connections close
/// after 90 s.
#[derive(Clone, Default)]
pub struct HttpTransport {
    guard: Guard,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("allow_internal", &self.guard.internal_allowed())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// The transport with the SSRF guard on and the system resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether endpoints may be internal (loopback, private...): for trusted calls between
    /// services on one machine or network. Off by default.
    #[must_use]
    pub fn allow_internal(mut self, allow: bool) -> Self {
        self.guard = self.guard.allow_internal(allow);
        self
    }

    /// Resolves host names with `resolver` instead of the system's. The SSRF guard applies to
    /// what it returns.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.guard = self.guard.with_resolver(resolver);
        self
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpOptions {
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: usize,
    #[serde(
        default = "default_connect_timeout",
        with = "switchyard_core::duration"
    )]
    connect_timeout: Duration,
    #[serde(default)]
    tls: TlsConfig,
    #[serde(default)]
    auth: AuthConfig,
}

const fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_content_type() -> String {
    "application/octet-stream".to_owned()
}

const fn default_max_response_bytes() -> usize {
    4 << 20
}

impl TransportFactory<Bytes, Bytes> for HttpTransport {
    fn build(&self, spec: &RouteSpec<'_>) -> Result<RouteService<Bytes, Bytes>, BoxError> {
        let uri = route_endpoint(&self.guard, spec, "http[s]://host[:port]/path")?;
        let options: HttpOptions = transport_options(spec.options)?;
        let content_type = header::HeaderValue::from_str(&options.content_type)
            .map_err(|_| format!("invalid content_type {:?}", options.content_type))?;
        let (tls, auth) = route_credentials(&self.guard, &uri, &options.tls, &options.auth)?;
        let connector = route_connector(
            &self.guard,
            &uri,
            &tls,
            &[b"http/1.1"],
            Some(options.connect_timeout),
        )?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(BoxCloneSyncService::new(HttpRoute {
            shared: Arc::new(HttpRouteShared {
                client,
                uri,
                content_type,
                auth,
                max_response_bytes: options.max_response_bytes,
                service: spec.service.into(),
            }),
        }))
    }
}

// === impl Service for HttpRoute: one call ===

struct HttpRouteShared {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    content_type: header::HeaderValue,
    auth: AuthHeaders,
    max_response_bytes: usize,
    service: Arc<str>,
}

/// One `http` route's service.
#[derive(Clone)]
struct HttpRoute {
    shared: Arc<HttpRouteShared>,
}

impl Service<Bytes> for HttpRoute {
    type Response = Bytes;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, payload: Bytes) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(shared.uri.clone())
                .header(header::CONTENT_TYPE, shared.content_type.clone())
                .body(Full::new(payload))?;
            shared.auth.apply(request.headers_mut());
            let response = shared
                .client
                .request(request)
                .await
                .map_err(|e| call_failed(&shared.service, Box::new(e)))?;
            let status = response.status();
            if !status.is_success() {
                let failed = UpstreamFailed::status(Arc::clone(&shared.service), status);
                return Err(Box::new(failed) as BoxError);
            }
            let body = Limited::new(response.into_body(), shared.max_response_bytes)
                .collect()
                .await
                .map_err(|e| UpstreamFailed::error(Arc::clone(&shared.service), e))?;
            Ok(body.to_bytes())
        })
    }
}
