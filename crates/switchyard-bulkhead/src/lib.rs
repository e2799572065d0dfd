//! A bulkhead layer for tower: concurrency isolation with the four backpressure policies.
//!
//! A bulkhead caps how many calls run at once against one dependency, so that a slow backend
//! ties up a bounded share of a service's capacity instead of all of it. What happens to the
//! call beyond the cap is the [`BulkheadPolicy`]:
//!
//! | policy | beyond the cap | cost of a slot |
//! | --- | --- | --- |
//! | [`BulkheadPolicy::HardReject`] (default) | refused at once with [`BulkheadFull`] | one atomic compare-and-swap |
//! | [`BulkheadPolicy::Queue`] | waits in a fair FIFO queue (bounded, with a deadline), then refused | tokio's semaphore |
//! | [`BulkheadPolicy::SoftAllow`] | admitted and counted | one atomic add |
//! | [`BulkheadPolicy::SoftAllowWithSignal`] | admitted, counted, and signalled on a `watch` channel | one atomic add |
//!
//! # Example
//!
//! ```
//! use switchyard_bulkhead::{BulkheadConfig, BulkheadFull, BulkheadLayer, BulkheadPolicy};
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = BulkheadConfig::new(1, BulkheadPolicy::HardReject);
//! let bulkhead = BulkheadLayer::new("ledger", &config)?;
//! let controller = bulkhead.controller().clone();
//! let mut service = ServiceBuilder::new()
//!     .layer(bulkhead)
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//!
//! // Work outside tower can hold the slot too: the service is then full.
//! let permit = controller.try_acquire()?;
//! let err = service.ready().await?.call(1).await.unwrap_err();
//! assert_eq!(err.to_string(), "bulkhead full: ledger");
//! assert!(err.downcast_ref::<BulkheadFull>().is_some());
//!
//! drop(permit);
//! assert_eq!(service.ready().await?.call(21).await?, 42);
//! # Ok(())
//! # }
//! ```
//!
//! # Marking responses admitted over capacity
//!
//! Beyond the `pressure()` watch and the permit's flag, a soft-allow bulkhead can mark each
//! response of a call it admitted over its limit:
//! [`BulkheadLayer::signal_responses`] inserts an [`OverCapacity`] extension into such
//! `http::Response`s, and [`BulkheadLayer::with_signal`] takes any [`SignalResponse`] for other
//! response types. The default, [`NoSignal`], costs nothing.
//!
//! # Adaptive limit
//!
//! With an [`AdaptiveConfig`] the slot count moves between bounds with the backend's health:
//! errors and slow calls shrink it multiplicatively, timely successes on a busy bulkhead grow it
//! by a step (AIMD). The service feeds every call's outcome and latency to it; other users of
//! the controller call [`AdmissionController::record`].
//!
//! # Tower semantics
//!
//! A full bulkhead never returns `Err` from `poll_ready` (tower's `Buffer` and balancers would
//! take the service for dead). Hard reject follows `tower::load_shed`: `poll_ready` is `Ok`
//! and `call` returns a ready [`BulkheadFull`] (HTTP 503, gRPC `RESOURCE_EXHAUSTED`). The
//! queue policy waits in `poll_ready`, holding the slot it gets in the service (as tower's
//! `ConcurrencyLimit` does), and refuses through `call` when the queue is full or the wait
//! expires. The slot is released when the response future resolves or is dropped.
//!
//! # A bulkhead per key
//!
//! [`KeyedBulkheadLayer`] keeps one bulkhead per key taken from the request (a tenant, a route),
//! bounded in number: a new key evicts the least recently used idle bulkhead, and is refused if
//! every kept bulkhead is busy.
//!
//! # The admission controller
//!
//! [`AdmissionController`] is the bulkhead without tower: `try_acquire`, `acquire` (queues
//! under the queue policy, cancel-safe), [`Permit`]s released on drop, [`BulkheadStats`], and
//! the pressure `watch` channel. switchyard's ordered stream gate uses it for its backpressure.
//!
//! # Observability
//!
//! Metrics: `switchyard_bulkhead_in_flight{bulkhead}`, `switchyard_bulkhead_queued{bulkhead}` and
//! `switchyard_bulkhead_limit{bulkhead}` gauges, `switchyard_bulkhead_rejected_total{bulkhead,
//! reason}` (`full`, `queue_full`, `wait_expired`),
//! `switchyard_bulkhead_over_capacity_total{bulkhead}`, and the
//! `switchyard_bulkhead_wait_seconds{bulkhead}` histogram of queue waits. Tracing (target
//! `switchyard_bulkhead`): a DEBUG event per refusal (`bulkhead`, `reason`) and per limit change
//! (`bulkhead`, `from`, `to`), WARN when a signalling bulkhead goes over capacity and INFO when it
//! is back within.

mod admission;
mod config;
mod error;
mod future;
mod keyed;
mod layer;
mod observe;
mod service;
mod signal;

pub use admission::{AdmissionController, BulkheadStats, Permit};
pub use config::{
    AdaptiveConfig, BulkheadConfig, BulkheadPolicy, MAX_CONCURRENT_CALLS, NO_DEADLINE,
};
pub use error::{BulkheadFull, FullReason};
pub use future::ResponseFuture;
pub use keyed::{KeyedBulkhead, KeyedBulkheadHandle, KeyedBulkheadLayer};
pub use layer::BulkheadLayer;
pub use service::Bulkhead;
pub use signal::{NoSignal, OverCapacity, OverCapacityExtension, SignalResponse};

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
