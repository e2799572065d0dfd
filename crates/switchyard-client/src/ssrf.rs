//! The SSRF guard: outbound connections reach only public addresses unless internal ones are
//! allowed. IP literals are checked when an endpoint is accepted ([`check_literal_host`]); a host
//! *name* is checked on every address it resolves to, when a connection is made
//! ([`GuardedResolver`]), so DNS rebinding cannot reach an internal address either.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use switchyard_core::{Rejection, RejectionKind};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

/// A name resolver a transport can use instead of the system's (`getaddrinfo`).
pub type Resolver = BoxCloneSyncService<Name, Vec<SocketAddr>, BoxError>;

/// Why an address is internal, or `None` for a public one.
///
/// Internal: loopback, private (RFC 1918), carrier-grade NAT (100.64/10), link-local, unspecified
/// and "this network" (0/8), broadcast, benchmarking (198.18/15), IETF protocol assignments
/// (192.0.0/24), documentation (TEST-NET: 192.0.2/24, 198.51.100/24, 203.0.113/24), reserved
/// (240/4), multicast; IPv6 loopback, unspecified, unique-local (fc00::/7), link-local (fe80::/10),
/// site-local (fec0::/10), multicast (ff00::/8), Teredo (2001::/32); and every IPv6 form that
/// carries an IPv4 address — IPv4-mapped (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96),
/// IPv4-compatible (::/96), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4 (2002::/16) — which would
/// otherwise reach an internal IPv4 host past the IPv4 checks.
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
            } else if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
                Some("IPv4-translated IPv6 address")
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
    } else if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113)
    {
        Some("documentation address (TEST-NET)")
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
pub struct GuardedResolver {
    inner: Resolver,
    allow_internal: bool,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("allow_internal", &self.allow_internal)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// Resolves with `inner`, dropping internal addresses unless `allow_internal`.
    pub fn new(inner: Resolver, allow_internal: bool) -> Self {
        Self {
            inner,
            allow_internal,
        }
    }
}

/// Refuses a host that is an internal IP literal (hyper-util connects to literals without
/// asking the resolver, so they are checked here, when the route is built).
pub fn check_literal_host(host: &str, allow_internal: bool) -> Result<(), SsrfBlocked> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    // An IPv6 zone id (`fe80::1%25eth0`) is not part of the address.
    let literal = literal.split('%').next().unwrap_or(literal);
    if let Ok(ip) = literal.parse::<IpAddr>()
        && !allow_internal
        && let Some(reason) = internal_reason(ip)
    {
        return Err(SsrfBlocked::new(host, reason));
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

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool), boxed as a [`Resolver`].
pub fn system_resolver() -> Resolver {
    BoxCloneSyncService::new(
        GaiResolver::new()
            .map_response(Iterator::collect::<Vec<_>>)
            .map_err(BoxError::from),
    )
}

/// The SSRF guard refused an address: the endpoint is, or resolves to, a loopback, private,
/// link-local, unique-local, unspecified or IPv4-mapped address, and the transport does not
/// allow internal targets. Maps to 503 / `UNAVAILABLE` (the route is misconfigured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrfBlocked {
    host: String,
    reason: &'static str,
    service: Option<Arc<str>>,
}

impl SsrfBlocked {
    /// `host` refused for `reason` (`"loopback address"`, ...).
    pub fn new(host: impl Into<String>, reason: &'static str) -> Self {
        Self {
            host: host.into(),
            reason,
            service: None,
        }
    }

    /// The same refusal, naming the route (or plugin) whose call it was.
    #[must_use]
    pub fn for_service(mut self, service: Arc<str>) -> Self {
        self.service = Some(service);
        self
    }

    /// The route whose call was refused, when refused at connect time (at build time the
    /// error that wraps this one names it).
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The host (name or address) that was refused.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Why: `"loopback address"`, `"private address"`, ...
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for SsrfBlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(service) = &self.service {
            write!(f, "route {service}: ")?;
        }
        write!(f, "blocked internal target {}: {}", self.host, self.reason)
    }
}

impl Error for SsrfBlocked {}

impl Rejection for SsrfBlocked {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RouteUnavailable
    }

    fn subject(&self) -> Option<&str> {
        self.service.as_deref()
    }
}
