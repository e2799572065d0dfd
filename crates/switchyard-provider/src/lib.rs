//! Provider registry and manager for tower services.
//!
//! A provider is a plain tower `Service`. This crate gives the registry, lifecycle and
//! selection around such services:
//!
//! - a [`ProviderRegistry`] of named factories that build a [`Provider`] from a JSON or typed
//!   config;
//! - opt-in lifecycle: [`Initialize`] (run once by the manager before first use; a failure
//!   leaves that provider out with a clear error) and [`Close`] (run by
//!   [`Manager::close_all`] in reverse initialization order, each with a deadline, every
//!   error collected);
//! - a [`Manager`] that initializes providers (optionally wrapped in any tower `Layer`),
//!   selects one ([`Selection`]: first available, a priority list, round robin or any
//!   switchyard-balance strategy — availability is tower readiness plus health), and is
//!   itself a `Service` dispatching to the selected provider;
//! - the four interaction [`patterns`] (request-response, stream, sink, duplex) as
//!   service shapes, each with its resilience rules.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde_json::json;
//! use switchyard_provider::{Manager, Provider, ProviderRegistry, Selection};
//! use tower::{BoxError, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Greeter { greeting: String }
//!
//! let registry = Arc::new(ProviderRegistry::<String, String>::new());
//! for language in ["en", "fr"] {
//!     registry.register_typed(language, |config: Greeter| {
//!         Ok::<_, BoxError>(Provider::new(service_fn(move |name: String| {
//!             let greeting = config.greeting.clone();
//!             async move { Ok::<_, BoxError>(format!("{greeting}, {name}")) }
//!         })))
//!     });
//! }
//!
//! let mut manager = Manager::new("greeters", registry, Selection::FirstAvailable);
//! manager.initialize("en", &json!({ "greeting": "Hello" })).await?;
//! assert_eq!(manager.ready().await?.call("Ada".into()).await?, "Hello, Ada");
//!
//! // A config that does not fit the factory's type is refused, naming the field.
//! let err = manager.initialize("fr", &json!({ "greting": "Bonjour" })).await.unwrap_err();
//! assert!(err.to_string().contains("unknown field `greting`"));
//! assert_eq!(manager.names(), ["en"]);
//!
//! manager.close_all(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Observability
//!
//! `switchyard_provider_initializations_total{manager,provider,outcome}` (`ok`, `error`) and
//! `switchyard_provider_closes_total{manager,provider,outcome}` (`ok`, `error`, `timeout`);
//! INFO events (target `switchyard_provider`) when a provider is initialized or closed, WARN
//! when one fails to. Calls through the manager are switchyard-balance's (its metrics name the
//! manager as the balancer).

mod error;
mod lifecycle;
mod manager;
pub mod patterns;
mod registry;

pub use error::{CloseErrors, CloseTimedOut, ProviderError};
pub use lifecycle::{BoxProvider, Close, Initialize, Provider};
pub use manager::{Manager, Selection};
pub use patterns::DuplexChannel;
pub use registry::ProviderRegistry;
pub use switchyard_balance::Picked;

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
