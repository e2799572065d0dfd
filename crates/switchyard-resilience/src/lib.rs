//! Per-route resilience as data: one [`ResilienceConfig`] builds a whole tower stack.
//!
//! A [`ResilienceLayer`] turns a config document — every section optional — into the layers of
//! switchyard's other crates, stacked in one fixed order (rate limit → bulkhead → circuit
//! breaker → retry → per-attempt timeout, with an optional total timeout outside), so that a
//! route's or a provider's resilience is a row of JSON rather than code. A [`FallbackLayer`]
//! answers from another service when the stack fails, a [`TimeoutLayer`] maps tower's timeout
//! to core's `Timeout` rejection, and a [`StackRegistry`] collects the stacks' handles for status
//! pages (state snapshots as serde data, `reset_all`).
//!
//! # Example
//!
//! ```
//! use switchyard_resilience::{StackRegistry, ResilienceConfig, ResilienceLayer};
//! use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = ResilienceConfig::from_json(r#"{
//!     "timeout": "2s",
//!     "rate_limit": { "rate": "100/s" },
//!     "bulkhead": { "max_concurrent_calls": 10 },
//!     "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 5 } } },
//!     "retry": { "max_attempts": 3, "backoff": { "initial": "10ms" } }
//! }"#)?;
//! let stack = ResilienceLayer::new("quotes", &config)?;
//! let registry = StackRegistry::new();
//! registry.register(stack.handles());
//!
//! let mut service = stack.layer(service_fn(|symbol: &'static str| async move {
//!     Ok::<_, BoxError>(format!("{symbol}: 42.0"))
//! }));
//! assert_eq!(service.ready().await?.call("ACME").await?, "ACME: 42.0");
//! assert_eq!(registry.snapshot()[0].bulkhead.as_ref().map(|b| b.in_flight), Some(0));
//! # Ok(())
//! # }
//! ```
//!
//! # Observability
//!
//! Each layer reports under its own crate's names, labelled with the stack's name. This crate
//! adds `switchyard_resilience_fallbacks_total{stack}` and a DEBUG event (target
//! `switchyard_resilience`, fields `stack`, `cause`) per fallback.

#[cfg(feature = "axum")]
pub mod axum;
mod config;
mod fallback;
mod layer;
mod registry;
mod timeout;

pub use config::ResilienceConfig;
pub use fallback::{Fallback, FallbackFuture, FallbackLayer};
pub use layer::{Pattern, ResilienceLayer, RetryStage, Stack, StackHandles};
pub use registry::{StackRegistry, StackSnapshot};
pub use timeout::{TimedOut, Timeout, TimeoutFuture, TimeoutLayer};

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
