//! The layer: holds the shared slots and wraps services with them.

use std::sync::Arc;

use switchyard_core::ConfigError;
use tower::Layer;

use crate::admission::AdmissionController;
use crate::config::BulkheadConfig;
use crate::service::Bulkhead;

/// Wraps services in one shared bulkhead: every service this layer builds, and every clone of
/// those, draws from the same slots.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    controller: AdmissionController,
}

impl BulkheadLayer {
    /// A bulkhead named `name` (in errors, metrics and events) as `config` describes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(name: impl Into<Arc<str>>, config: &BulkheadConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            controller: AdmissionController::new(name, config)?,
        })
    }

    /// A layer over an existing controller, to share its slots with other work.
    pub fn from_controller(controller: AdmissionController) -> Self {
        Self { controller }
    }

    /// The admission controller: stats, pressure, and slots for work outside tower.
    pub fn controller(&self) -> &AdmissionController {
        &self.controller
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.controller.clone())
    }
}
