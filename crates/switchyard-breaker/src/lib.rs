//! A circuit breaker layer for tower.
//!
//! A circuit breaker stops calling a backend that keeps failing, so that a sick dependency
//! costs its callers a fast, typed error instead of a pile of timeouts, and gets room to
//! recover. This one is built for the hot path: a closed breaker admits a call with an atomic
//! load (re-checking the permit with another in `call`) and records it with a few atomic
//! operations, never a lock per call.
//!
//! # Example
//!
//! The breaker trips after two failures; the third call is refused without reaching the
//! service:
//!
//! ```
//! use std::time::Duration;
//! use switchyard_breaker::{BreakerOpen, CircuitBreakerConfig, CircuitBreakerLayer, Trip};
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = CircuitBreakerConfig::new(Trip::consecutive_failures(2))
//!     .with_wait_in_open(Duration::from_millis(100));
//! let breaker = CircuitBreakerLayer::new("payments", config)?;
//! let mut service = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|_: ()| async { Err::<(), BoxError>("service down".into()) }));
//!
//! for _ in 0..2 {
//!     let err = service.ready().await?.call(()).await.unwrap_err();
//!     assert_eq!(err.to_string(), "service down");
//! }
//! let err = service.ready().await?.call(()).await.unwrap_err();
//! assert_eq!(err.to_string(), "circuit open: payments");
//! assert!(err.downcast_ref::<BreakerOpen>().is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Three concerns, kept apart
//!
//! - **Classification** — which outcomes are failures — is switchyard-core's
//!   [`Classify`](switchyard_core::Classify): any `Err` by default, or HTTP statuses, gRPC
//!   codes, or a closure, through [`CircuitBreakerLayer::with_classifier`]. Ignored outcomes
//!   never count.
//! - **The trip policy and state machine** decide. The [`policy`] module holds the
//!   [`TripPolicy`](policy::TripPolicy) trait and its three built-ins: consecutive failures
//!   (the default), a count-based and a time-based sliding window with failure-rate and
//!   slow-call-rate thresholds. The state machine above them (closed → open → half-open →
//!   closed) is pure and takes `now` as an argument; it is tested without any service.
//! - **Admission** is the [`CircuitBreaker`] service, a thin adapter: `poll_ready` asks the
//!   state machine for a permit, the [`ResponseFuture`] reports the outcome.
//!
//! # Tower semantics
//!
//! An `Err` from `poll_ready` tells tower's `Buffer` and balancers that a service is dead, so
//! an open breaker never returns one. By default ([`BreakerMode::FailFast`]) it follows
//! `tower::load_shed`: `poll_ready` answers `Ok` without polling the inner service, and `call`
//! returns an immediately ready [`BreakerOpen`] (HTTP 503, gRPC `UNAVAILABLE`, with
//! `retry_after` set to the rest of the open wait). [`BreakerMode::Backpressure`] instead keeps
//! `poll_ready` pending until the breaker would admit a call, woken by a tokio timer.
//!
//! Clones of a service share its breaker; each layer is one breaker.
//! [`KeyedCircuitBreakerLayer`] keeps one breaker per key (host, route, tenant), bounded in
//! number.
//!
//! # Steering from outside
//!
//! [`BreakerHandle`] (from [`CircuitBreakerLayer::handle`]) reads the state and a
//! [`BreakerSnapshot`], forces the breaker open or closed, resets it, streams
//! [`StateChange`] events, and can [`follow`](BreakerHandle::follow) an external on/off
//! switch: a health monitor or an overload detector elsewhere can take a backend out of
//! service through the breaker that already guards it.
//!
//! # Breakers and retry budgets
//!
//! A breaker and a retry budget answer different questions. The budget (tower's
//! `TpsBudget`) caps how much *extra* load retries may add — a fraction of recent traffic —
//! so that retries cannot multiply an outage, but it still lets first attempts through to a
//! dead backend. The breaker stops the first attempts too, once the backend has proven sick,
//! and probes for recovery. Stack them with the retry *inside* the breaker (switchyard's order
//! is rate limit → bulkhead → breaker → retry): every attempt's outcome is then seen by the
//! breaker only as the outcome of the whole retried call, so one sick request does not count
//! three times, and an open breaker stops the retry loop before it starts.
//!
//! # Observability
//!
//! Every transition emits a `tracing` event (target `switchyard_breaker`, fields `breaker`,
//! `from`, `to`) and updates `metrics`: `switchyard_breaker_calls_total{breaker, outcome}`,
//! `switchyard_breaker_slow_calls_total{breaker}`, `switchyard_breaker_state{breaker}` and
//! `switchyard_breaker_transitions_total{breaker, from, to}`. Metric handles are registered
//! when the layer is built: install your recorder first.
//!
//! Ideas credited: the sliding windows with running totals, the slow-call rate, the
//! half-open probe limit and the forced states follow
//! [Resilience4j](https://resilience4j.readme.io/docs/circuitbreaker); the load-shed
//! rejection follows `tower::load_shed`.

mod config;
mod error;
mod future;
mod handle;
mod keyed;
mod layer;
mod observe;
pub mod policy;
mod service;
mod state;
mod window;

pub use config::{
    BreakerMode, CircuitBreakerConfig, FailureWindow, MAX_COUNT_WINDOW, MAX_TIME_BUCKETS,
    MAX_TIME_WINDOW, RateConfig, Trip,
};
pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use handle::{BreakerHandle, BreakerSnapshot, StateChange};
pub use keyed::{KeyedBreakerHandle, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::BreakerState;

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
