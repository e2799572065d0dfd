//! A whole stack in one `route_layer`: [`ResilienceLayer::http`] here is the HTTP stack of
//! [`crate::ResilienceLayer::http`] made to fit axum ([`AxumLayer`]), and [`layers`] builds one
//! per route from a map of configs, registering their handles.
//!
//! ```
//! use axum::{Router, routing::post};
//! use switchyard_resilience::ResilienceConfig;
//! use switchyard_resilience::axum::ResilienceLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = ResilienceConfig::from_json(r#"{"timeout":"2s","retry":{"max_attempts":3}}"#)?;
//! let app: Router = Router::new()
//!     .route("/pay", post(|body: String| async move { format!("paid {body}") }))
//!     .route_layer(ResilienceLayer::http("pay", &cfg)?);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_core::axum::{AxumLayer, ErrorFormat};
use switchyard_core::{ConfigError, HttpClassifier};
use switchyard_retry::http::HttpRetryLayer;
use tower::Layer;

use crate::config::ResilienceConfig;
use crate::layer::StackHandles;
use crate::registry::StackRegistry;

/// The HTTP stack, for axum: takes axum's `Request<Body>`, answers a `Response`, never fails.
/// A rejection (timed out, rate limited, bulkhead full, breaker open) is rendered by core's
/// mapping ([`switchyard_core::axum::rejection_response`]): 504, 429, 503 with `Retry-After`
/// where known, a JSON body by default; any other error is a 500 that shows nothing of it.
///
/// The same name as the raw [`crate::ResilienceLayer`] on purpose: import this one in an axum
/// app and `ResilienceLayer::http(name, &config)?` goes straight into `Router::route_layer`,
/// `MethodRouter::layer` or `Router::layer`.
#[derive(Debug, Clone)]
pub struct ResilienceLayer {
    inner: AxumLayer<crate::ResilienceLayer<HttpRetryLayer, HttpClassifier>>,
}

impl ResilienceLayer {
    /// The stack `config` describes, named `name` in every layer's errors, metrics and events;
    /// retries replay buffered bodies and the breaker counts 5xx answers as failures, as
    /// [`crate::ResilienceLayer::http`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the dotted path of the first bad field.
    pub fn http(name: impl Into<Arc<str>>, config: &ResilienceConfig) -> Result<Self, ConfigError> {
        crate::ResilienceLayer::http(name, config).map(Self::from)
    }

    /// Renders failures in `format` (JSON by default).
    #[must_use]
    pub fn format(self, format: ErrorFormat) -> Self {
        Self {
            inner: self.inner.format(format),
        }
    }

    /// Handles on the stack's stateful layers, for status pages and a [`StackRegistry`].
    pub fn handles(&self) -> StackHandles {
        self.inner.get_ref().handles()
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        self.inner.get_ref().name()
    }
}

impl From<crate::ResilienceLayer<HttpRetryLayer, HttpClassifier>> for ResilienceLayer {
    fn from(stack: crate::ResilienceLayer<HttpRetryLayer, HttpClassifier>) -> Self {
        Self {
            inner: AxumLayer::new(stack),
        }
    }
}

impl<S> Layer<S> for ResilienceLayer
where
    AxumLayer<crate::ResilienceLayer<HttpRetryLayer, HttpClassifier>>: Layer<S>,
{
    type Service =
        <AxumLayer<crate::ResilienceLayer<HttpRetryLayer, HttpClassifier>> as Layer<S>>::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

/// One axum stack per route of `configs` (route name → config), each registered in
/// `registry` under its name: per-route resilience from a file in three lines.
///
/// ```
/// use std::collections::BTreeMap;
/// use axum::{Router, routing::get};
/// use switchyard_resilience::{ResilienceConfig, StackRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let text = r#"{ "quotes": { "retry": { "max_attempts": 3 } },
///                 "orders": { "rate_limit": { "rate": "2/m" } } }"#;
/// let configs: BTreeMap<String, ResilienceConfig> = switchyard_core::config::from_json(text, "routes")?;
/// let registry = StackRegistry::new();
/// let layers = switchyard_resilience::axum::layers(configs, &registry)?;
///
/// let app: Router = Router::new()
///     .route("/quotes", get(|| async { "42" }).layer(layers["quotes"].clone()))
///     .route("/orders", get(|| async { "[]" }).layer(layers["orders"].clone()));
/// assert_eq!(registry.names(), ["orders", "quotes"]);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The first bad config's [`ConfigError`], its path starting with the route's name.
pub fn layers(
    configs: impl IntoIterator<Item = (String, ResilienceConfig)>,
    registry: &StackRegistry,
) -> Result<BTreeMap<String, ResilienceLayer>, ConfigError> {
    let mut layers = BTreeMap::new();
    for (name, config) in configs {
        let layer = ResilienceLayer::http(name.as_str(), &config).map_err(|e| e.within(&name))?;
        registry.register(layer.handles());
        layers.insert(name, layer);
    }
    Ok(layers)
}
