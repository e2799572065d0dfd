//! The layer: holds the shared slots and wraps services with them.

use std::sync::Arc;

use switchyard_core::ConfigError;
use tower::Layer;

use crate::admission::AdmissionController;
use crate::config::BulkheadConfig;
use crate::service::Bulkhead;
use crate::signal::{NoSignal, OverCapacityExtension};

/// Wraps services in one shared bulkhead: every service this layer builds, and every clone of
/// those, draws from the same slots.
///
/// `M` says what to do to the responses of calls admitted over capacity: nothing by default;
/// see [`signal_responses`](Self::signal_responses).
#[derive(Debug, Clone)]
pub struct BulkheadLayer<M = NoSignal> {
    controller: AdmissionController,
    signal: M,
}

impl BulkheadLayer {
    /// A bulkhead named `name` (in errors, metrics and events) as `config` describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(name: impl Into<Arc<str>>, config: &BulkheadConfig) -> Result<Self, ConfigError> {
        Ok(Self::from_controller(AdmissionController::new(
            name, config,
        )?))
    }

    /// A layer over an existing controller, to share its slots with other work.
    pub fn from_controller(controller: AdmissionController) -> Self {
        Self {
            controller,
            signal: NoSignal,
        }
    }

    /// Marks every `http::Response` of a call admitted over capacity (policies `soft_allow`
    /// and `soft_allow_with_signal`) with an [`OverCapacity`](crate::OverCapacity) extension,
    /// for a handler or an outer layer to turn into a header or to shed optional work.
    pub fn signal_responses(self) -> BulkheadLayer<OverCapacityExtension> {
        self.with_signal(OverCapacityExtension)
    }

    /// Marks the responses of calls admitted over capacity with `signal`, for response types
    /// other than `http::Response`.
    pub fn with_signal<M>(self, signal: M) -> BulkheadLayer<M> {
        BulkheadLayer {
            controller: self.controller,
            signal,
        }
    }
}

impl<M> BulkheadLayer<M> {
    /// The admission controller: stats, pressure, and slots for work outside tower.
    pub fn controller(&self) -> &AdmissionController {
        &self.controller
    }
}

impl<S, M: Clone> Layer<S> for BulkheadLayer<M> {
    type Service = Bulkhead<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.controller.clone(), self.signal.clone())
    }
}
