//! Rate limit layers for tower, built on [governor](https://docs.rs/governor)'s GCRA.
//!
//! [`RateLimitLayer`] holds one limit shared by every service it builds and every clone of
//! those — unlike `tower::limit::RateLimit`, which is not `Clone`, so that an axum router
//! (which clones its services) admits the quota and not a multiple of it.
//! [`KeyedRateLimitLayer`] keeps a limit per key taken from the request (see [`key`]).
//! Quotas come from config (`"100/s"`, `"5000/min"`, a burst), and a call over the limit is
//! either refused at once with [`RateLimited`] (HTTP 429 with `Retry-After`, gRPC
//! `RESOURCE_EXHAUSTED`) or made to wait up to a bound.
//!
//! # Example
//!
//! ```
//! use switchyard_ratelimit::{RateLimitConfig, RateLimitLayer, RateLimited};
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let limit = RateLimitLayer::new("api", &RateLimitConfig::new("2/s".parse()?))?;
//! let mut service = ServiceBuilder::new()
//!     .layer(limit)
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
//!
//! // A clone shares the limit: two calls in total, not two each.
//! let mut clone = service.clone();
//! assert_eq!(service.ready().await?.call(1).await?, 1);
//! assert_eq!(clone.ready().await?.call(2).await?, 2);
//! let err = service.ready().await?.call(3).await.unwrap_err();
//! assert_eq!(err.to_string(), "rate limited: api");
//! let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
//! assert!(limited.retry_after() <= std::time::Duration::from_millis(500));
//! # Ok(())
//! # }
//! ```
//!
//! # Tower semantics
//!
//! The decision is made in `poll_ready` and delivered by `call`: in reject mode `poll_ready`
//! answers `Ok` and `call` returns a ready [`RateLimited`] (`tower::load_shed`'s pattern; an `Err`
//! from `poll_ready` would tell tower the service is dead). In wait mode `poll_ready` sleeps (tokio
//! time) until the limit admits the call, if that is within `max_wait`, and refuses otherwise; a
//! keyed limit learns its key in `call`, so its waiting call waits in the response future with a
//! clone of the inner service, readied once admitted. A refusal is decided afresh at every
//! `poll_ready`. Time is tokio's ([`TokioClock`]), so paused-time tests control the limit.
//!
//! # Observability
//!
//! Metrics `switchyard_ratelimit_admitted_total{limit}`,
//! `switchyard_ratelimit_rejected_total{limit}`, and for keyed limits with cleanup
//! `switchyard_ratelimit_keys{limit}`; a DEBUG tracing event per refusal (target
//! `switchyard_ratelimit`, fields `limit`, `retry_after_ms`).

mod clock;
mod config;
mod error;
mod future;
pub mod key;
mod keyed;
mod layer;
mod limiter;
mod service;

pub use clock::{TokioClock, TokioInstant};
pub use config::{InvalidRate, Rate, RateLimitConfig, RateLimitMode};
pub use error::RateLimited;
pub use future::{KeyedResponseFuture, ResponseFuture};
pub use keyed::{KeyedRateLimit, KeyedRateLimitLayer};
pub use layer::RateLimitLayer;
pub use service::RateLimit;

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
