//! The router's typed errors. Each implements core's [`Rejection`], so a gateway maps it to an
//! HTTP status or gRPC code without knowing the router.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use switchyard_core::{ConfigError, Rejection, RejectionKind};

/// No route and no local service is registered under the name (or the route says `local` and
/// no local service of that name exists). Maps to 404 / `UNIMPLEMENTED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNotFound {
    service: Arc<str>,
}

impl ServiceNotFound {
    pub(crate) fn new(service: impl Into<Arc<str>>) -> Self {
        Self {
            service: service.into(),
        }
    }

    /// The name that was asked for.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl fmt::Display for ServiceNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service not found: {}", self.service)
    }
}

impl Error for ServiceNotFound {}

impl Rejection for ServiceNotFound {
    fn kind(&self) -> RejectionKind {
        RejectionKind::ServiceNotFound
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// A route's strategy names no registered transport (a typo, or a transport this process does
/// not have). Only that route is broken. Maps to 503 / `UNAVAILABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFactory {
    service: Arc<str>,
    strategy: Arc<str>,
}

impl NoFactory {
    pub(crate) fn new(service: Arc<str>, strategy: Arc<str>) -> Self {
        Self { service, strategy }
    }

    /// The route.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The strategy no transport is registered for.
    pub fn strategy(&self) -> &str {
        &self.strategy
    }
}

impl fmt::Display for NoFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route {}: no transport registered for strategy `{}`",
            self.service, self.strategy
        )
    }
}

impl Error for NoFactory {}

impl Rejection for NoFactory {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RouteUnavailable
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// A route's transport could not be built from its endpoint and config (an invalid URL, an
/// endpoint the SSRF guard blocks, a factory's own error). Only that route is broken. Maps to
/// 503 / `UNAVAILABLE`.
#[derive(Debug, Clone)]
pub struct FactoryFailed {
    service: Arc<str>,
    strategy: Arc<str>,
    source: Arc<dyn Error + Send + Sync>,
}

impl FactoryFailed {
    pub(crate) fn new(
        service: Arc<str>,
        strategy: Arc<str>,
        source: Arc<dyn Error + Send + Sync>,
    ) -> Self {
        Self {
            service,
            strategy,
            source,
        }
    }

    /// The route.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The route's strategy.
    pub fn strategy(&self) -> &str {
        &self.strategy
    }
}

impl fmt::Display for FactoryFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route {}: the `{}` transport failed to build: {}",
            self.service, self.strategy, self.source
        )
    }
}

impl Error for FactoryFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

impl Rejection for FactoryFailed {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RouteUnavailable
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// A route's `config` column is not valid: malformed JSON, an unknown field, a value that
/// cannot work, a fallback with no local service. The error names the JSON path. Only that
/// route is broken. Maps to 503 / `UNAVAILABLE`.
#[derive(Debug, Clone)]
pub struct InvalidConfig {
    service: Arc<str>,
    error: ConfigError,
}

impl InvalidConfig {
    pub(crate) fn new(service: Arc<str>, error: ConfigError) -> Self {
        Self { service, error }
    }

    /// The route.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What is wrong, with the field's path.
    pub fn error(&self) -> &ConfigError {
        &self.error
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}: invalid config: {}", self.service, self.error)
    }
}

impl Error for InvalidConfig {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

impl Rejection for InvalidConfig {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RouteUnavailable
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// A handler panicked while handling a call (in `call` or while its future ran). The panic
/// is caught: the process, the route and other calls go on. Maps to 500 / `INTERNAL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    service: Arc<str>,
    message: String,
}

impl Panic {
    pub(crate) fn new(service: Arc<str>, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = switchyard_core::panic_message(payload);
        Self { service, message }
    }

    /// The service whose handler panicked.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The panic message, when the payload was a string.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handler panicked: {}: {}", self.service, self.message)
    }
}

impl Error for Panic {}

impl Rejection for Panic {
    fn kind(&self) -> RejectionKind {
        RejectionKind::Panic
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// A remote call failed: the upstream could not be reached, or answered with a non-2xx status,
/// or its response was too large. Maps to 502 / `UNAVAILABLE`.
#[derive(Debug)]
pub struct UpstreamFailed {
    service: Arc<str>,
    status: Option<http::StatusCode>,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl UpstreamFailed {
    pub(crate) fn status(service: Arc<str>, status: http::StatusCode) -> Self {
        Self {
            service,
            status: Some(status),
            source: None,
        }
    }

    pub(crate) fn error(service: Arc<str>, source: Box<dyn Error + Send + Sync>) -> Self {
        Self {
            service,
            status: None,
            source: Some(source),
        }
    }

    /// The route.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The upstream's status, when it answered with an error status.
    pub fn upstream_status(&self) -> Option<http::StatusCode> {
        self.status
    }
}

impl fmt::Display for UpstreamFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.status, &self.source) {
            (Some(status), _) => write!(f, "upstream of {} answered {status}", self.service),
            (None, Some(source)) => write!(f, "upstream of {} failed: {source}", self.service),
            (None, None) => write!(f, "upstream of {} failed", self.service),
        }
    }
}

impl Error for UpstreamFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl Rejection for UpstreamFailed {
    fn kind(&self) -> RejectionKind {
        RejectionKind::UpstreamFailed
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.service)
    }
}

/// Registers every rejection type of this crate (and the two it re-exports) with core.
pub(crate) fn register_all() {
    switchyard_core::rejection::register::<ServiceNotFound>();
    switchyard_core::rejection::register::<NoFactory>();
    switchyard_core::rejection::register::<FactoryFailed>();
    switchyard_core::rejection::register::<InvalidConfig>();
    switchyard_core::rejection::register::<Panic>();
    switchyard_core::rejection::register::<UpstreamFailed>();
    switchyard_client::register_rejections();
    switchyard_core::rejection::register::<switchyard_resilience::TimedOut>();
    switchyard_core::rejection::register::<switchyard_breaker::BreakerOpen>();
}

/// A route's database could not be read or written.
#[derive(Debug)]
pub struct SourceError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl SourceError {
    /// An error with a message and the underlying cause.
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An error with a message only.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Error for SourceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
