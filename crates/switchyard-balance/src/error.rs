//! The balancer's errors.

use std::fmt;
use std::sync::Arc;

use switchyard_core::{ConfigError, Rejection, RejectionKind};

/// No endpoint can take the call: none is enabled, healthy and not ejected. Maps to 503 /
/// `UNAVAILABLE` (core's `NoAvailableEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAvailableEndpoint {
    balancer: Arc<str>,
}

impl NoAvailableEndpoint {
    pub(crate) fn new(balancer: Arc<str>) -> Self {
        Self { balancer }
    }

    /// The balancer's name.
    pub fn balancer(&self) -> &str {
        &self.balancer
    }
}

impl fmt::Display for NoAvailableEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no available endpoint: {}", self.balancer)
    }
}

impl std::error::Error for NoAvailableEndpoint {}

impl Rejection for NoAvailableEndpoint {
    fn kind(&self) -> RejectionKind {
        RejectionKind::NoAvailableEndpoint
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.balancer)
    }
}

/// Why a change to a balancer's endpoints (or their health checks) was refused. Nothing
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// An endpoint of this name is already in the balancer.
    Duplicate(String),
    /// No endpoint has this name.
    NotFound(String),
    /// The endpoint's or the health check's config is invalid: the field and why.
    InvalidConfig(ConfigError),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duplicate(name) => write!(f, "an endpoint named {name:?} is already there"),
            Self::NotFound(name) => write!(f, "no endpoint named {name:?}"),
            Self::InvalidConfig(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for EndpointError {}

#[cfg(feature = "axum")]
switchyard_core::rejection_into_response!(NoAvailableEndpoint);
