//! The breaker's rejection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{Rejection, RejectionKind};

/// A call refused because the circuit breaker is open, held open, or has no free half-open
/// probe slot.
///
/// Returned by the service (boxed into a `BoxError`) instead of calling the inner service;
/// `downcast_ref::<BreakerOpen>()` or [`switchyard_core::find_rejection`] finds it. `Display`
/// reads `circuit open: <breaker name>`. It maps to HTTP 503 and gRPC `UNAVAILABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
}

impl BreakerOpen {
    pub(crate) fn new(name: Arc<str>, retry_after: Option<Duration>) -> Self {
        Self { name, retry_after }
    }

    /// The name of the breaker that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker lets probes through; `None` when it is half-open with every
    /// probe slot taken, or held open until someone releases it.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open: {}", self.name)
    }
}

impl std::error::Error for BreakerOpen {}

impl Rejection for BreakerOpen {
    fn kind(&self) -> RejectionKind {
        RejectionKind::CircuitOpen
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.name)
    }
}

#[cfg(feature = "axum")]
switchyard_core::rejection_into_response!(BreakerOpen);

#[cfg(all(test, feature = "axum"))]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn an_open_breaker_is_a_503_with_retry_after_in_axum() {
        let response =
            BreakerOpen::new("ledger".into(), Some(Duration::from_millis(2500))).into_response();
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
    }
}
