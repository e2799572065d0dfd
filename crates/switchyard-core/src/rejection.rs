//! Why a layer refused a call, mapped once to HTTP and gRPC.
//!
//! A switchyard layer that refuses a call (an open breaker, a full bulkhead, an exhausted rate
//! limit) does it the `tower::load_shed` way: `poll_ready` answers `Ok` and `call` returns a
//! small typed error, boxed into a [`BoxError`](crate::BoxError). Each such error type
//! implements [`Rejection`], which says what *kind* of refusal it is and, where the layer
//! knows, when a retry could succeed. The kind alone decides the HTTP status, the gRPC code and
//! whether a retry makes sense, so every crate maps the same refusal the same way.
//!
//! A rejection may reach a caller wrapped in other errors (a hyper or tonic error, a user's
//! own). [`find_rejection`] walks the `source()` chain and finds it, provided its type was
//! [`register`]ed; every switchyard layer registers its rejection type when it is built, and
//! users can register their own. [`find_cause`] is the generic form for one concrete type, in
//! the manner of linkerd's `is_caused_by`.

use std::any::TypeId;
use std::error::Error;
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use http::StatusCode;
use tower_http::classify::GrpcCode;

/// The text of a caught panic's payload (`panic!` with a message gives a `&str` or a
/// `String`), for the errors that report it: [`RejectionKind::Panic`] and its kin.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

/// The kinds of refusal a switchyard layer can answer with instead of calling its inner service.
///
/// The kind decides the protocol mapping, so it is the one thing to get right when writing a
/// new rejection type. New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A circuit breaker is open (or held open): the backend is presumed down.
    CircuitOpen,
    /// A bulkhead has no free slot and its queue, if any, is full or the wait expired.
    BulkheadFull,
    /// A rate limit's quota is used up for now.
    RateLimited,
    /// The call took longer than its deadline.
    Timeout,
    /// The service is shedding load for a reason not covered above.
    Overloaded,
    /// The service or its process is shutting down and takes no new work.
    Shutdown,
    /// No route or service is registered under the requested name.
    ServiceNotFound,
    /// A balancer has no healthy, enabled endpoint to send the call to.
    NoAvailableEndpoint,
    /// A route exists but cannot be served as configured: its strategy has no transport, its
    /// config or endpoint is invalid, or its transport failed to build. Terminal for retries:
    /// only a change to the route's row can fix it.
    RouteUnavailable,
    /// The upstream a call was forwarded to failed: it could not be reached, or it answered
    /// with an error status.
    UpstreamFailed,
    /// The handler panicked; the panic was caught and turned into this error. Terminal for
    /// retries: a handler that panics on a request is a bug, not a transient fault.
    Panic,
}

impl RejectionKind {
    /// Every kind, in declaration order (for tables and exhaustive tests).
    pub const ALL: [Self; 11] = [
        Self::CircuitOpen,
        Self::BulkheadFull,
        Self::RateLimited,
        Self::Timeout,
        Self::Overloaded,
        Self::Shutdown,
        Self::ServiceNotFound,
        Self::NoAvailableEndpoint,
        Self::RouteUnavailable,
        Self::UpstreamFailed,
        Self::Panic,
    ];

    /// Whether the same call may succeed if tried again later or elsewhere.
    ///
    /// A retry should still wait for [`Rejection::retry_after`] where the rejection gives one:
    /// retrying an open breaker or an exhausted quota at once only adds load.
    pub const fn is_retryable(self) -> bool {
        !self.is_terminal()
    }

    /// Whether no retry of the same call can succeed: the target does not exist or is going
    /// away. Retry policies must not retry terminal rejections.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Shutdown | Self::ServiceNotFound | Self::RouteUnavailable | Self::Panic
        )
    }

    /// The HTTP status a server should answer with.
    pub const fn http_status(self) -> StatusCode {
        match self {
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ServiceNotFound => StatusCode::NOT_FOUND,
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::Panic => StatusCode::INTERNAL_SERVER_ERROR,
            Self::CircuitOpen
            | Self::BulkheadFull
            | Self::Overloaded
            | Self::Shutdown
            | Self::NoAvailableEndpoint
            | Self::RouteUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code a server should answer with.
    ///
    /// Load-related refusals are `RESOURCE_EXHAUSTED`, as tonic's own load shedding answers;
    /// a presumed-down backend is `UNAVAILABLE`, which gRPC clients treat as retryable.
    pub const fn grpc_code(self) -> GrpcCode {
        match self {
            Self::BulkheadFull | Self::RateLimited | Self::Overloaded => {
                GrpcCode::ResourceExhausted
            }
            Self::Timeout => GrpcCode::DeadlineExceeded,
            Self::ServiceNotFound => GrpcCode::Unimplemented,
            Self::Panic => GrpcCode::Internal,
            Self::CircuitOpen
            | Self::Shutdown
            | Self::NoAvailableEndpoint
            | Self::RouteUnavailable
            | Self::UpstreamFailed => GrpcCode::Unavailable,
        }
    }

    /// The same code as [`grpc_code`](Self::grpc_code), as tonic's type (converted, not a
    /// second table).
    #[cfg(feature = "grpc")]
    pub fn tonic_code(self) -> tonic::Code {
        to_tonic(self.grpc_code())
    }

    /// A stable snake_case name, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::BulkheadFull => "bulkhead_full",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::Overloaded => "overloaded",
            Self::Shutdown => "shutdown",
            Self::ServiceNotFound => "service_not_found",
            Self::NoAvailableEndpoint => "no_available_endpoint",
            Self::RouteUnavailable => "route_unavailable",
            Self::UpstreamFailed => "upstream_failed",
            Self::Panic => "panic",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed refusal from a switchyard layer (or a user's own layer).
///
/// Implement it for the small error type a layer returns instead of calling its inner service,
/// then [`register`] the type so [`find_rejection`] can recognise it inside error chains.
pub trait Rejection: Error + Send + Sync + 'static {
    /// What kind of refusal this is; decides the protocol mapping.
    fn kind(&self) -> RejectionKind;

    /// When a retry could succeed, if the layer knows (a breaker's remaining open time, a rate
    /// limiter's next free slot).
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The name of what refused (the breaker, bulkhead or route name), if it has one.
    fn subject(&self) -> Option<&str> {
        None
    }

    /// A `tonic::Status` carrying this rejection's code and message.
    #[cfg(feature = "grpc")]
    fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind().tonic_code(), self.to_string())
    }
}

type Downcast = for<'a> fn(&'a (dyn Error + 'static)) -> Option<&'a dyn Rejection>;

static REGISTRY: RwLock<Vec<(TypeId, Downcast)>> = RwLock::new(Vec::new());

fn downcast<'a, R: Rejection>(err: &'a (dyn Error + 'static)) -> Option<&'a dyn Rejection> {
    err.downcast_ref::<R>().map(|r| r as &dyn Rejection)
}

/// Makes [`find_rejection`] recognise `R` in error chains. Idempotent and cheap to repeat;
/// layers call it when they are constructed.
pub fn register<R: Rejection>() {
    let id = TypeId::of::<R>();
    // A poisoned lock only means a panic elsewhere while pushing; the Vec is still valid.
    let known = crate::sync::read(&REGISTRY).iter().any(|(t, _)| *t == id);
    if !known {
        let mut registry = crate::sync::write(&REGISTRY);
        if !registry.iter().any(|(t, _)| *t == id) {
            registry.push((id, downcast::<R>));
        }
    }
}

/// Finds the first registered [`Rejection`] in `err` or its `source()` chain.
///
/// Accepts `&*box_error` for a [`BoxError`](crate::BoxError).
pub fn find_rejection<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a dyn Rejection> {
    let registry = crate::sync::read(&REGISTRY);
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = registry.iter().find_map(|(_, d)| d(e)) {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The HTTP response a server should answer a rejection with: the kind's status, a
/// `Retry-After` header (whole seconds, rounded up) when the rejection knows when to retry,
/// and its message as a plain-text body. Usable as an axum response as it is.
///
/// ```
/// use std::time::Duration;
/// use switchyard_core::{Rejection, RejectionKind};
/// # #[derive(Debug)] struct Limited;
/// # impl std::fmt::Display for Limited {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
/// #         f.write_str("rate limited: api")
/// #     }
/// # }
/// # impl std::error::Error for Limited {}
/// impl Rejection for Limited {
///     fn kind(&self) -> RejectionKind { RejectionKind::RateLimited }
///     fn retry_after(&self) -> Option<Duration> { Some(Duration::from_millis(1500)) }
/// }
///
/// let response = switchyard_core::rejection::http_response(&Limited);
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "2");
/// assert_eq!(response.body(), "rate limited: api");
/// ```
pub fn http_response(rejection: &dyn Rejection) -> http::Response<String> {
    let mut response = http::Response::new(rejection.to_string());
    *response.status_mut() = rejection.kind().http_status();
    if let Some(after) = retry_after_header(rejection) {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, after);
    }
    response
}

/// The `Retry-After` header value for a rejection that knows when to retry: whole seconds,
/// rounded up (so a client never comes back early). For servers that build their own response
/// body, as [`http_response`] does for a plain-text one.
pub fn retry_after_header(rejection: &dyn Rejection) -> Option<http::HeaderValue> {
    retry_after_secs(rejection).map(http::HeaderValue::from)
}

/// When to retry, in whole seconds rounded up, as `Retry-After` (HTTP) and `retry-after`
/// (gRPC metadata) say it.
pub fn retry_after_secs(rejection: &dyn Rejection) -> Option<u64> {
    let after = rejection.retry_after()?;
    Some(after.as_secs() + u64::from(after.subsec_nanos() > 0))
}

/// Finds the first error of concrete type `E` in `err` or its `source()` chain.
pub fn find_cause<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A gRPC code as tonic's type: the one conversion between tower-http's `GrpcCode` (what
/// core's mapping speaks) and `tonic::Code`, both being the wire numbers.
#[cfg(feature = "grpc")]
pub fn to_tonic(code: GrpcCode) -> tonic::Code {
    tonic::Code::from(code as i32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rate-limit rejection saying to retry in 1 s, for this crate's tests.
    #[derive(Debug)]
    pub(crate) struct Limited;
    impl fmt::Display for Limited {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("rate limited")
        }
    }
    impl Error for Limited {}
    impl Rejection for Limited {
        fn kind(&self) -> RejectionKind {
            RejectionKind::RateLimited
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(Duration::from_secs(1))
        }
    }

    #[derive(Debug)]
    struct Unregistered;
    impl fmt::Display for Unregistered {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("unregistered")
        }
    }
    impl Error for Unregistered {}
    impl Rejection for Unregistered {
        fn kind(&self) -> RejectionKind {
            RejectionKind::Overloaded
        }
    }

    /// An error that wraps another, as hyper and tonic errors do.
    #[derive(Debug)]
    struct Wrapper(crate::BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("transport error")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn finds_a_registered_rejection_deep_in_a_chain() {
        register::<Limited>();
        register::<Limited>();
        let err: crate::BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(Limited)))));
        let found = find_rejection(&*err).expect("found through two wrappers");
        assert_eq!(found.kind(), RejectionKind::RateLimited);
        assert_eq!(found.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(found.to_string(), "rate limited");
    }

    #[test]
    fn unregistered_types_and_plain_errors_are_not_rejections() {
        let err: crate::BoxError = Box::new(Wrapper(Box::new(Unregistered)));
        assert!(find_rejection(&*err).is_none());
        assert!(find_cause::<Unregistered>(&*err).is_some());
        let plain: crate::BoxError = "boom".into();
        assert!(find_rejection(&*plain).is_none());
    }

    #[test]
    fn every_kind_maps_to_a_status_a_code_and_a_retry_verdict() {
        let table: Vec<_> = RejectionKind::ALL
            .iter()
            .map(|k| {
                (
                    k.as_str(),
                    k.http_status().as_u16(),
                    k.grpc_code(),
                    k.is_retryable(),
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                ("circuit_open", 503, GrpcCode::Unavailable, true),
                ("bulkhead_full", 503, GrpcCode::ResourceExhausted, true),
                ("rate_limited", 429, GrpcCode::ResourceExhausted, true),
                ("timeout", 504, GrpcCode::DeadlineExceeded, true),
                ("overloaded", 503, GrpcCode::ResourceExhausted, true),
                ("shutdown", 503, GrpcCode::Unavailable, false),
                ("service_not_found", 404, GrpcCode::Unimplemented, false),
                ("no_available_endpoint", 503, GrpcCode::Unavailable, true),
                ("route_unavailable", 503, GrpcCode::Unavailable, false),
                ("upstream_failed", 502, GrpcCode::Unavailable, true),
                ("panic", 500, GrpcCode::Internal, false),
            ]
        );
        for kind in RejectionKind::ALL {
            assert_eq!(kind.is_terminal(), !kind.is_retryable());
        }
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn tonic_codes_agree_with_tower_http_codes() {
        for kind in RejectionKind::ALL {
            assert_eq!(
                i32::from(kind.tonic_code()),
                kind.grpc_code() as i32,
                "{kind}"
            );
        }
    }
}
