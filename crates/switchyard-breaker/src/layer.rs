//! The layer: holds the shared breaker and wraps services with it.

use std::fmt;
use std::sync::Arc;

use switchyard_core::{ConfigError, ErrorsAsFailures};
use tower::Layer;

use crate::config::CircuitBreakerConfig;
use crate::error::BreakerOpen;
use crate::handle::{BreakerHandle, Shared};
use crate::policy::{Policy, TripPolicy};
use crate::service::CircuitBreaker;

/// Wraps services in one shared circuit breaker.
///
/// Every service this layer builds, and every clone of those, uses the same breaker: build
/// one layer per backend you want to isolate, or use
/// [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer) for a breaker per key.
///
/// The classifier (default [`ErrorsAsFailures`]) decides which calls count as failures; see
/// [`switchyard_core::classify`].
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    shared: Arc<Shared>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker named `name` (used in errors, metrics and events) as `config` describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let policy = Policy::from_config(&config.trip);
        Ok(Self::build(name.into(), config, policy))
    }

    /// A breaker whose closed state is judged by a policy of your own instead of
    /// `config.trip` (which is ignored); the rest of `config` still applies.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn with_policy(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
        policy: impl TripPolicy,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(
            name.into(),
            config,
            Policy::Custom(Box::new(policy)),
        ))
    }

    fn build(name: Arc<str>, config: CircuitBreakerConfig, policy: Policy) -> Self {
        switchyard_core::rejection::register::<BreakerOpen>();
        Self {
            shared: Arc::new(Shared::new(name, config, policy)),
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Uses `classifier` to decide which outcomes are failures, successes or ignored.
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// The handle of this layer's breaker: state, counters, force/reset, events.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, Arc::clone(&self.shared), self.classifier.clone())
    }
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.shared.name)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
