//! The small shared vocabulary of switchyard.
//!
//! Every switchyard layer answers the same three questions the same way, and this crate is
//! where those answers live:
//!
//! - **Was this call a success?** [`classify`] holds the [`Classify`] trait that turns a
//!   call's `Result` into an [`Outcome`] (success, failure, or ignored), with ready classifiers
//!   for plain `Result`s ([`ErrorsAsFailures`]), HTTP responses ([`HttpClassifier`], and
//!   [`TowerHttp`] over any `tower_http::classify` classifier) and, behind the `grpc` feature,
//!   gRPC codes (`GrpcClassifier`).
//! - **Why was this call refused?** [`rejection`] holds [`RejectionKind`] and the
//!   [`Rejection`] trait that every layer's typed error implements, so that a breaker's
//!   `BreakerOpen` and a limiter's `RateLimited` map to HTTP statuses and gRPC codes in one
//!   place, and [`find_rejection`] digs a rejection out of any `tower::BoxError` chain.
//! - **Is this config valid?** [`config`] holds [`ConfigError`], which names the offending
//!   field, and [`duration`], the humane (`"250ms"`, `"30s"`) duration format every config
//!   uses.
//! - **How is per-key state bounded?** [`keyed::KeyedMap`] keeps at most `max_keys` values for
//!   the keyed variants of every layer, evicting by a rank the layer chooses.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use switchyard_core::{
//!     Classify, ErrorsAsFailures, Outcome, Rejection, RejectionKind, find_rejection,
//! };
//!
//! // A layer's typed rejection...
//! #[derive(Debug)]
//! struct Busy;
//! impl std::fmt::Display for Busy {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("busy")
//!     }
//! }
//! impl std::error::Error for Busy {}
//! impl Rejection for Busy {
//!     fn kind(&self) -> RejectionKind {
//!         RejectionKind::BulkheadFull
//!     }
//!     fn retry_after(&self) -> Option<Duration> {
//!         Some(Duration::from_millis(50))
//!     }
//! }
//! switchyard_core::rejection::register::<Busy>();
//!
//! // ...travels as a `BoxError` and is found again, with its mapping.
//! let err: tower::BoxError = Box::new(Busy);
//! let rejection = find_rejection(&*err).expect("a registered rejection");
//! assert_eq!(rejection.kind().http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(rejection.retry_after(), Some(Duration::from_millis(50)));
//!
//! // The default classifier counts every `Err` as a failure.
//! let result: Result<u32, tower::BoxError> = Err(err);
//! assert_eq!(ErrorsAsFailures.classify(result.as_ref()), Outcome::Failure);
//! ```

#[cfg(any(feature = "axum", feature = "grpc"))]
pub mod adapt;
#[cfg(feature = "axum")]
pub mod axum;
pub mod classify;
pub mod config;
pub mod duration;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod keyed;
pub mod rejection;
pub mod sync;
#[cfg(feature = "test-util")]
pub mod test_util;

#[cfg(feature = "grpc")]
pub use classify::GrpcClassifier;
pub use classify::{
    Classify, ErrorsAsFailures, HttpClassifier, IgnoreRejections, Outcome, TowerHttp, classify_fn,
};
pub use config::ConfigError;
pub use rejection::{Rejection, RejectionKind, find_cause, find_rejection, panic_message};

/// Seconds since the Unix epoch by the wall clock (`0` for a clock set before 1970), for what
/// status pages report (the time of a reload, of an error). Never for a decision: decisions use
/// tokio's clock, which tests pause.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The error type every switchyard layer returns, as in tower: layers require
/// `S::Error: Into<BoxError>` so stacks compose without nested error enums.
pub type BoxError = tower::BoxError;

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
