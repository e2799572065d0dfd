//! The rate limiter's rejection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{Rejection, RejectionKind};

/// A call refused because its rate limit is used up for now.
///
/// Returned (boxed into a `BoxError`) instead of calling the inner service;
/// `downcast_ref::<RateLimited>()` or [`switchyard_core::find_rejection`] finds it. `Display`
/// reads `rate limited: <name>`. It maps to HTTP 429 with a `Retry-After` header
/// ([`switchyard_core::rejection::http_response`]) and gRPC `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    name: Arc<str>,
    retry_after: Duration,
}

impl RateLimited {
    pub(crate) fn new(name: Arc<str>, retry_after: Duration) -> Self {
        Self { name, retry_after }
    }

    /// The name of the limit that refused (for a keyed limit too: the key stays out, as it may
    /// be a credential).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the limit would admit this call.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited: {}", self.name)
    }
}

impl std::error::Error for RateLimited {}

impl Rejection for RateLimited {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RateLimited
    }

    fn retry_after(&self) -> Option<Duration> {
        Some(self.retry_after)
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.name)
    }
}

#[cfg(feature = "axum")]
switchyard_core::rejection_into_response!(RateLimited);

#[cfg(all(test, feature = "axum"))]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn a_rate_limit_is_a_429_with_retry_after_in_axum() {
        let response = RateLimited::new("search".into(), Duration::from_secs(4)).into_response();
        assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "4");
    }
}
