//! A retry layer for tower: tower's own `Retry` service with a policy built from config.
//!
//! [`RetryLayer`] retries failed calls up to `max_attempts`, waiting an exponential backoff
//! with [`Jitter`] between attempts, within a retry budget shared by every clone (tower's
//! `TpsBudget`), so that retries add a bounded share of load to a backend that is already
//! failing. What counts as a failure is a switchyard classifier's call
//! ([`Classify`](switchyard_core::Classify)); a switchyard rejection is decided by core: a
//! terminal one (no such service, shutting down) is never retried, and the others are retried
//! no sooner than their `retry_after`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use switchyard_retry::{BackoffConfig, Jitter, RetryConfig, RetryLayer};
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = RetryConfig::new(3)
//!     .with_backoff(BackoffConfig::constant(Duration::from_millis(5)))
//!     .with_jitter(Jitter::None);
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = Arc::clone(&calls);
//! let mut service = ServiceBuilder::new()
//!     .layer(RetryLayer::new("inventory", &config)?)
//!     .service(service_fn(move |item: &'static str| {
//!         let n = seen.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             if n < 2 {
//!                 Err::<String, BoxError>("connection reset".into())
//!             } else {
//!                 Ok(format!("{item}: 7 left"))
//!             }
//!         }
//!     }));
//!
//! assert_eq!(service.ready().await?.call("bolts").await?, "bolts: 7 left");
//! assert_eq!(calls.load(Ordering::SeqCst), 3, "two failures, then a success");
//! # Ok(())
//! # }
//! ```
//!
//! # HTTP and gRPC
//!
//! `http::Request` is not `Clone`, which is why tower's retry does not work with hyper or tonic
//! as it is. [`http::HttpRetryLayer`] buffers each request body up to `max_body_bytes` (64 KiB
//! by default) in a [`http::ReplayBody`] and retries idempotent methods only (or requests
//! marked [`http::Idempotent`]); a larger body streams through untouched and is not retried.
//! See the [`http`] module for the rules, including gRPC's.
//!
//! # Tower semantics
//!
//! tower's `Retry` clones the service (and the policy) once per call; the first attempt goes to
//! the instance the caller readied, later ones wait for readiness again. Delays are tokio
//! sleeps: under paused time a test sees the exact sequence ([`RetryLayer::with_seed`] fixes
//! the jitter).
//!
//! # Observability
//!
//! Counters `switchyard_retry_retries_total{retry}`,
//! `switchyard_retry_not_retried_total{retry, reason}` (`attempts`, `budget`, `terminal`,
//! `retry_after`) and `switchyard_retry_unreplayable_total{retry, reason}` (`not_idempotent`,
//! `body_too_large`); DEBUG events (target `switchyard_retry`) per retry (`retry`, `attempt`,
//! `delay_ms`) and per call not retried (`retry`, `attempt`, `reason`).

mod backoff;
mod config;
pub mod http;
mod layer;
mod policy;

pub use backoff::Backoff;
pub use config::{
    BackoffConfig, BudgetConfig, IDEMPOTENT_METHODS, Jitter, MAX_ATTEMPTS, RetryConfig,
};
pub use layer::{Retry, RetryLayer};
pub use policy::{CloneRequest, NotRetried, Replay, RetryPolicy};

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
