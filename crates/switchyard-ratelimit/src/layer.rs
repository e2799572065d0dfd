//! The global layer: one limit shared by every service it builds and every clone of those.

use std::sync::Arc;

use switchyard_core::ConfigError;
use tower::Layer;

use crate::config::RateLimitConfig;
use crate::error::RateLimited;
use crate::limiter::Limiter;
use crate::service::RateLimit;

/// Wraps services in one shared rate limit.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    /// A limit named `name` (in errors and metrics) as `config` describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(name: impl Into<Arc<str>>, config: &RateLimitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        switchyard_core::rejection::register::<RateLimited>();
        Ok(Self {
            limiter: Arc::new(Limiter::new(name.into(), config)),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.limiter))
    }
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limit", &self.limiter.name)
            .field("mode", &self.limiter.mode)
            .finish_non_exhaustive()
    }
}
