//! The bulkhead's rejection.

use std::fmt;
use std::sync::Arc;

use switchyard_core::{Rejection, RejectionKind};

/// Why a bulkhead refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FullReason {
    /// Every slot was taken (hard reject).
    Full,
    /// Every slot was taken and the wait queue was full too.
    QueueFull,
    /// The call waited in the queue for `max_wait` without getting a slot.
    WaitExpired,
}

impl FullReason {
    /// A stable snake_case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::QueueFull => "queue_full",
            Self::WaitExpired => "wait_expired",
        }
    }
}

/// A call refused because the bulkhead had no free slot.
///
/// Returned (boxed into a `BoxError`) instead of calling the inner service;
/// `downcast_ref::<BulkheadFull>()` or [`switchyard_core::find_rejection`] finds it. `Display`
/// reads `bulkhead full: <name>`. It maps to HTTP 503 and gRPC `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    name: Arc<str>,
    reason: FullReason,
}

impl BulkheadFull {
    pub(crate) fn new(name: Arc<str>, reason: FullReason) -> Self {
        Self { name, reason }
    }

    /// The name of the bulkhead that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why it refused.
    pub fn reason(&self) -> FullReason {
        self.reason
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bulkhead full: {}", self.name)
    }
}

impl std::error::Error for BulkheadFull {}

impl Rejection for BulkheadFull {
    fn kind(&self) -> RejectionKind {
        RejectionKind::BulkheadFull
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.name)
    }
}

#[cfg(feature = "axum")]
switchyard_core::rejection_into_response!(BulkheadFull);
