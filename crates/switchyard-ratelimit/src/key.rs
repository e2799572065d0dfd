//! Ready key extractors for [`KeyedRateLimitLayer`](crate::KeyedRateLimitLayer).
//!
//! Any `Fn(&Request) -> K` is a key extractor; these cover the common HTTP cases. For the
//! client's address behind axum, use a closure over its `ConnectInfo`:
//! `|req: &Request<_>| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())`.

use std::net::{IpAddr, SocketAddr};

/// The value of header `name`, or `"-"` when the request has none (all such requests then share
/// one limit).
pub fn header<B>(name: &'static str) -> impl Fn(&http::Request<B>) -> String + Clone {
    move |req| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    }
}

/// The peer IP from a plain `SocketAddr` in the request's extensions, or the unspecified
/// address when there is none.
///
/// **Check that your server puts one there**: neither hyper-util nor axum does by default
/// (axum stores `ConnectInfo<SocketAddr>`; use the closure in the module docs). Without it,
/// every request maps to `0.0.0.0` and all clients share one limit.
pub fn peer_ip<B>() -> impl Fn(&http::Request<B>) -> IpAddr + Clone {
    |req| {
        req.extensions()
            .get::<SocketAddr>()
            .map_or(IpAddr::from([0, 0, 0, 0]), SocketAddr::ip)
    }
}

/// The request path, for a limit per route.
pub fn path<B>() -> impl Fn(&http::Request<B>) -> String + Clone {
    |req| req.uri().path().to_owned()
}
