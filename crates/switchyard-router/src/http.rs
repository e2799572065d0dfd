//! The `http` transport: POSTs the payload to the route's endpoint with hyper-util's pooled
//! client, behind an SSRF guard that checks the addresses actually connected to.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::error::{SsrfBlocked, UpstreamFailed};
use crate::transport::{RouteService, RouteSpec, TransportFactory};

/// How long an idle pooled connection stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

// === the SSRF guard: resolving and checking every address ===

/// A name resolver the HTTP transport can use instead of the system's (`getaddrinfo`).
pub type Resolver = BoxCloneSyncService<Name, Vec<SocketAddr>, BoxError>;

/// Why an address is internal, or `None` for a public one.
///
/// Internal: loopback, private (RFC 1918), carrier-grade NAT (100.64/10), link-local,
/// unspecified and "this network" (0/8), broadcast, benchmarking (198.18/15), IETF protocol
/// assignments (192.0.0/24), reserved (240/4), multicast; IPv6 loopback, unspecified,
/// unique-local (fc00::/7), link-local (fe80::/10), site-local (fec0::/10), multicast (ff00::/8),
/// Teredo (2001::/32); and every IPv6 form that carries an IPv4 address — IPv4-mapped
/// (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4
/// (2002::/16) — which would otherwise reach an internal IPv4 host past the IPv4 checks.
pub fn internal_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback address")
            } else if v6.is_unspecified() {
                Some("unspecified address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local address")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local address")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast address")
            } else if v6.to_ipv4_mapped().is_some() {
                Some("IPv4-mapped IPv6 address")
            } else if s[..6].iter().all(|x| *x == 0) {
                Some("IPv4-compatible IPv6 address")
            } else if (s[0] == 0x64 && s[1] == 0xff9b) && (s[2..6] == [0; 4] || s[2] == 1) {
                Some("NAT64 address (embeds an IPv4 address)")
            } else if s[0] == 0x2002 {
                Some("6to4 address (embeds an IPv4 address)")
            } else if s[0] == 0x2001 && s[1] == 0 {
                Some("Teredo address (embeds an IPv4 address)")
            } else {
                None
            }
        }
    }
}

fn internal_v4(v4: std::net::Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("loopback address")
    } else if v4.is_private() {
        Some("private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT address")
    } else if v4.is_link_local() {
        Some("link-local address")
    } else if a == 0 {
        Some("unspecified address")
    } else if v4.is_broadcast() {
        Some("broadcast address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking address")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment address")
    } else if a >= 224 {
        Some("multicast or reserved address")
    } else {
        None
    }
}

/// Resolves through an inner resolver and drops internal addresses unless they are allowed;
/// a name left with no address fails with [`SsrfBlocked`]. Because hyper-util connects only
/// to what the resolver returns, a name that resolves to a public address when the route is
/// built and to an internal one later (DNS rebinding) is still refused at connect time.
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    inner: Resolver,
    allow_internal: bool,
}

impl GuardedResolver {
    pub(crate) fn new(inner: Resolver, allow_internal: bool) -> Self {
        Self {
            inner,
            allow_internal,
        }
    }
}

/// A remote route's endpoint, parsed and checked: present, an `http` URL with a host (`https`
/// is refused: no TLS connector yet), and not an internal IP literal unless allowed. `shape`
/// says what the strategy expects, for the error.
pub(crate) fn guarded_endpoint(
    spec: &RouteSpec<'_>,
    shape: &str,
    allow_internal: bool,
) -> Result<Uri, BoxError> {
    let endpoint = spec
        .endpoint
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| format!("the {} strategy needs an endpoint: {shape}", spec.strategy))?;
    let uri = Uri::from_str(endpoint).map_err(|e| format!("invalid URL {endpoint:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https endpoints are not supported yet (no TLS connector)".into());
        }
        _ => return Err(format!("invalid URL {endpoint:?}: expected {shape}").into()),
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("invalid URL {endpoint:?}: no host"))?;
    check_literal_host(host, allow_internal)?;
    Ok(uri)
}

/// Refuses a host that is an internal IP literal (hyper-util connects to literals without
/// asking the resolver, so they are checked here, when the route is built).
pub(crate) fn check_literal_host(host: &str, allow_internal: bool) -> Result<(), BoxError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    // An IPv6 zone id (`fe80::1%25eth0`) is not part of the address.
    let literal = literal.split('%').next().unwrap_or(literal);
    if let Ok(ip) = literal.parse::<IpAddr>()
        && !allow_internal
        && let Some(reason) = internal_reason(ip)
    {
        return Err(Box::new(SsrfBlocked::new(host, reason)));
    }
    Ok(())
}

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolve = self.inner.clone().oneshot(name.clone());
        let allow_internal = self.allow_internal;
        Box::pin(async move {
            let addrs = resolve.await?;
            if allow_internal {
                return Ok(addrs.into_iter());
            }
            let mut blocked = None;
            let public: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|addr| match internal_reason(addr.ip()) {
                    Some(reason) => {
                        blocked.get_or_insert(reason);
                        false
                    }
                    None => true,
                })
                .collect();
            match (public.is_empty(), blocked) {
                (true, Some(reason)) => {
                    Err(Box::new(SsrfBlocked::new(name.as_str(), reason)) as BoxError)
                }
                (true, None) => Err(format!("{} resolved to no address", name.as_str()).into()),
                (false, _) => Ok(public.into_iter()),
            }
        })
    }
}

pub(crate) fn system_resolver() -> Resolver {
    BoxCloneSyncService::new(
        GaiResolver::new()
            .map_response(Iterator::collect::<Vec<_>>)
            .map_err(BoxError::from),
    )
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
///
/// The route's deadline is its config's `timeout` (the resilience stack's), which fails a call
/// with [`TimedOut`](switchyard_resilience::TimedOut). A non-2xx answer, a refused connection or an
/// oversized response fails it with [`UpstreamFailed`].
///
/// **SSRF guard.** Unless [`allow_internal`](Self::allow_internal) is set, an endpoint whose
/// host is an internal address ([`internal_reason`]) is refused when the route is built, and a
/// host *name* is checked on every address it resolves to when a connection is made, so DNS
/// rebinding cannot reach an internal address either. `https` endpoints are refused: this
/// transport has no TLS connector yet.
///
/// Each route has its own connection pool, dropped with the route; idle connections close
/// after 90 s.
#[derive(Clone, Default)]
pub struct HttpTransport {
    guard: Guard,
}

/// What the `http` and `grpc` transports share: the SSRF guard's settings, the guarded
/// connector and the endpoint check.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) allow_internal: bool,
    pub(crate) resolver: Resolver,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            allow_internal: false,
            resolver: system_resolver(),
        }
    }
}

impl Guard {
    /// A TCP connector that connects only to the addresses the guarded resolver lets through.
    pub(crate) fn connector(&self) -> HttpConnector<GuardedResolver> {
        let mut connector = HttpConnector::new_with_resolver(GuardedResolver::new(
            self.resolver.clone(),
            self.allow_internal,
        ));
        connector.set_nodelay(true);
        connector
    }

    /// The route's endpoint, checked ([`guarded_endpoint`]).
    pub(crate) fn endpoint(&self, spec: &RouteSpec<'_>, shape: &str) -> Result<Uri, BoxError> {
        guarded_endpoint(spec, shape, self.allow_internal)
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("allow_internal", &self.allow_internal)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("allow_internal", &self.guard.allow_internal)
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
        self.guard.allow_internal = allow;
        self
    }

    /// Resolves host names with `resolver` instead of the system's. The SSRF guard applies to
    /// what it returns.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.guard.resolver = resolver;
        self
    }

    fn client(
        &self,
        connect_timeout: Duration,
    ) -> Client<HttpConnector<GuardedResolver>, Full<Bytes>> {
        let mut connector = self.guard.connector();
        connector.set_connect_timeout(Some(connect_timeout));
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector)
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
        let uri = self.guard.endpoint(spec, "http://host[:port]/path")?;
        let options: HttpOptions = serde_json::from_value(spec.options.clone())
            .map_err(|e| format!("invalid transport options: {e}"))?;
        let content_type = header::HeaderValue::from_str(&options.content_type)
            .map_err(|_| format!("invalid content_type {:?}", options.content_type))?;
        Ok(BoxCloneSyncService::new(HttpRoute {
            shared: Arc::new(HttpRouteShared {
                client: self.client(options.connect_timeout),
                uri,
                content_type,
                max_response_bytes: options.max_response_bytes,
                service: spec.service.into(),
            }),
        }))
    }
}

// === impl Service for HttpRoute: one call ===

struct HttpRouteShared {
    client: Client<HttpConnector<GuardedResolver>, Full<Bytes>>,
    uri: Uri,
    content_type: header::HeaderValue,
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
            let request = Request::builder()
                .method(Method::POST)
                .uri(shared.uri.clone())
                .header(header::CONTENT_TYPE, shared.content_type.clone())
                .body(Full::new(payload))?;
            let response = shared.client.request(request).await.map_err(|e| {
                if let Some(blocked) = switchyard_core::find_cause::<SsrfBlocked>(&e) {
                    let blocked = blocked.clone().for_service(Arc::clone(&shared.service));
                    return Box::new(blocked) as BoxError;
                }
                Box::new(UpstreamFailed::error(
                    Arc::clone(&shared.service),
                    Box::new(e),
                ))
            })?;
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
