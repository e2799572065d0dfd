//! The layer: tower's `Retry` with a [`RetryPolicy`] built from config.

use std::fmt;
use std::sync::Arc;

use switchyard_core::{ConfigError, ErrorsAsFailures};
use tower::Layer;

use crate::config::RetryConfig;
use crate::policy::{CloneRequest, RetryPolicy, Shared};

/// tower's retry service with switchyard's policy: what [`RetryLayer`] builds.
pub type Retry<S, C = ErrorsAsFailures, R = CloneRequest> =
    tower::retry::Retry<RetryPolicy<C, R>, S>;

/// Retries failed calls as a [`RetryConfig`] describes, with tower's `Retry` service.
///
/// Every service it builds, and every clone of those, shares one retry budget. The classifier
/// `C` decides which results are failures worth retrying ([`ErrorsAsFailures`] by default:
/// every error); `R` copies a request for another attempt ([`CloneRequest`] by default, for
/// `Clone` requests; see [`HttpRetryLayer`](crate::http::HttpRetryLayer) for
/// `http::Request`s).
pub struct RetryLayer<C = ErrorsAsFailures, R = CloneRequest> {
    shared: Arc<Shared>,
    classifier: C,
    replay: R,
}

impl RetryLayer {
    /// A retry named `name` (in metrics and events) as `config` describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(name: impl Into<Arc<str>>, config: &RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(name.into(), config.clone(), None)),
            classifier: ErrorsAsFailures,
            replay: CloneRequest,
        })
    }
}

impl<C, R> RetryLayer<C, R> {
    /// Classifies results with `classifier` instead: a [`Failure`](switchyard_core::Outcome)
    /// is retried (non-terminal switchyard rejections are retried whatever it says).
    pub fn with_classifier<C2>(self, classifier: C2) -> RetryLayer<C2, R> {
        RetryLayer {
            shared: self.shared,
            classifier,
            replay: self.replay,
        }
    }

    /// Copies requests for another attempt with `replay` instead.
    pub fn with_replay<R2>(self, replay: R2) -> RetryLayer<C, R2> {
        RetryLayer {
            shared: self.shared,
            classifier: self.classifier,
            replay,
        }
    }

    /// Seeds the jitter's random source, for reproducible delays in tests. Call it before
    /// building services: it starts a fresh budget.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        let shared = Shared::new(
            Arc::clone(&self.shared.name),
            self.shared.config.clone(),
            Some(seed),
        );
        Self {
            shared: Arc::new(shared),
            ..self
        }
    }

    /// The retry's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The config it retries by.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    pub(crate) fn replay(&self) -> &R {
        &self.replay
    }
}

impl<C: Clone, R: Clone> Clone for RetryLayer<C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, R> fmt::Debug for RetryLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("retry", &self.shared.name)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(
            RetryPolicy::new(
                Arc::clone(&self.shared),
                self.classifier.clone(),
                self.replay.clone(),
            ),
            inner,
        )
    }
}
