//! A circuit breaker layer for tower.
//!
//! stub docs
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

pub use config::{CircuitBreakerConfig, MAX_COUNT_WINDOW, MAX_TIME_BUCKETS, Mode, RateConfig, Trip, Window};
pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use handle::{BreakerHandle, BreakerSnapshot, StateChange};
pub use keyed::{KeyedBreakerHandle, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{State, Transition};
