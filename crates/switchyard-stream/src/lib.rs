//! An ordered client-stream gate for tonic.
//!
//! For client-streaming RPCs (many messages in, one response out), a [`Pipeline`] runs each
//! stream through Receiver → Gate → Engine: messages are numbered, admitted in order (global
//! FIFO, or FIFO per key with keys running concurrently) under a backpressure policy and
//! shutdown, and run through a handler — any tower `Service<Message<T>>` — with per-message
//! retries and panic recovery. The stream's answer is a [`Summary`]; its failures are
//! classified ([`FailureKind`]) with a mapping to `tonic::Code` aligned with switchyard-core's.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use switchyard_stream::{Message, StreamConfig, Pipeline};
//! use tower::{BoxError, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let handler = service_fn({
//!     let seen = Arc::clone(&seen);
//!     move |message: Message<(String, u32)>| {
//!         seen.lock().unwrap().push((message.key.to_string(), message.item.1));
//!         async { Ok::<_, BoxError>(()) }
//!     }
//! });
//! let options = StreamConfig::from_json(r#"{ "ordering": { "mode": "keyed_fifo" } }"#)?;
//! let pipeline = Pipeline::keyed("ledger", options, handler, |m: &(String, u32)| m.0.as_str())?;
//!
//! // In a tonic service: `pipeline.run(request.into_inner()).await`.
//! let messages = [("alice", 1), ("bob", 1), ("alice", 2)]
//!     .map(|(k, n)| Ok::<_, tonic::Status>((k.to_owned(), n)));
//! let summary = pipeline.run(futures::stream::iter(messages)).await;
//! assert_eq!((summary.received, summary.succeeded), (3, 3));
//! summary.status()?;
//! let seen = seen.lock().unwrap();
//! let alice: Vec<u32> = seen.iter().filter(|(k, _)| k == "alice").map(|(_, n)| *n).collect();
//! assert_eq!(alice, [1, 2]);
//! # Ok(())
//! # }
//! ```
//!
//! # Observability
//!
//! `switchyard_stream_admitted_total{pipeline}`,
//! `switchyard_stream_messages_failed_total{pipeline,outcome,kind,policy}` (`outcome` is `rejected`
//! or `failed`), `switchyard_stream_retries_total{pipeline}`, the gauges
//! `switchyard_stream_in_flight{pipeline}` and `switchyard_stream_queued{pipeline}`, and the
//! histogram `switchyard_stream_key_queue_depth{pipeline}` (a key's queue length when a
//! message joins it: per-key depth without a per-key label, so label cardinality stays
//! bounded), and the gauge `switchyard_stream_over_capacity{pipeline}`. Events under target
//! `switchyard_stream`.

mod config;
#[cfg(feature = "demo")]
pub mod demo;
mod engine;
mod failure;
mod gate;
mod lanes;
mod metrics;
mod pipeline;
mod receiver;
mod run;

pub use config::{
    BackpressureConfig, BackpressurePolicy, MessageRetryConfig, OrderingConfig, OrderingMode,
    ShutdownConfig, StreamConfig,
};
pub use engine::Message;
pub use failure::{FailureKind, MAX_REPORTED_FAILURES, MessageFailure, Summary};
pub use pipeline::Pipeline;

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
