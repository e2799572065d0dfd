//! Deciding whether a call succeeded, failed, or should not count at all.
//!
//! Layers that learn from outcomes (a breaker's failure rate, a retry policy, a balancer's
//! outlier detection) all ask the same question of each finished call, and a user answers it
//! once by picking a [`Classify`] implementation:
//!
//! | classifier | a failure is | use it for |
//! | --- | --- | --- |
//! | [`ErrorsAsFailures`] (default) | any `Err` | any service |
//! | [`HttpClassifier`] | an `Err`, a 5xx, or a status you add | HTTP clients and servers |
//! | [`TowerHttp`] | whatever a `tower_http::classify` classifier says | reusing tower-http's classifiers |
//! | `GrpcClassifier` (`grpc` feature) | an `Err` or a `grpc-status` in a code set | tonic channels and stubs |
//! | [`classify_fn`] | whatever your closure says | anything else |
//! | [`IgnoreRejections`] | what the wrapped one says, but never another layer's refusal | breakers outside bulkheads or limits |
//!
//! [`Outcome::Ignored`] is the third answer tower-http's classifiers lack: the call neither
//! proves the backend healthy nor sick (a client's `404`, a caller's cancellation, a rejection
//! by a layer further in) and must not move any counter.
//!
//! Classifiers are small `Copy` values (bitsets, not lists: `ErrorsAsFailures` is empty,
//! `GrpcClassifier` 8 bytes, `HttpClassifier` 128) because a layer copies its classifier into
//! every response future. [`IgnoreRejections`] wraps any of them so that a refusal by another
//! switchyard layer further in (a full bulkhead, an exhausted rate limit) does not count
//! against the backend.

#[cfg(feature = "grpc")]
mod grpc;
mod http;

use std::fmt;

use crate::BoxError;

#[cfg(feature = "grpc")]
pub use self::grpc::GrpcClassifier;
pub use self::http::{HttpClassifier, TowerHttp};

/// What a finished call tells a layer about the health of what it called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked; counts towards health.
    Success,
    /// The call failed in a way that says the backend is unwell; counts against it.
    Failure,
    /// The call says nothing about the backend; no counter moves.
    Ignored,
}

impl Outcome {
    /// A stable lower-case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Ignored => "ignored",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the [`Outcome`] of a finished call from its result.
///
/// `Res` is the service's response type and `E` its error type. switchyard layers convert
/// errors to [`BoxError`] before classifying, so a classifier used in a
/// layer needs to implement `Classify<Res, BoxError>`; the ready ones do.
pub trait Classify<Res, E> {
    /// Classifies one call's result.
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;
}

/// The default classifier: every `Ok` is a success and every `Err` a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<Res, E> Classify<Res, E> for ErrorsAsFailures {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Ignores errors that are switchyard rejections (see [`find_rejection`](crate::find_rejection))
/// and asks the wrapped classifier about everything else.
///
/// A breaker stacked outside a bulkhead or a rate limit sees their refusals as errors; with the
/// default [`ErrorsAsFailures`] those would count as backend failures, though the backend was
/// never called. Wrap the classifier in this to keep them out.
///
/// ```
/// use switchyard_core::{BoxError, Classify, ErrorsAsFailures, IgnoreRejections, Outcome};
/// # #[derive(Debug)] struct Full;
/// # impl std::fmt::Display for Full {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("full") }
/// # }
/// # impl std::error::Error for Full {}
/// # impl switchyard_core::Rejection for Full {
/// #     fn kind(&self) -> switchyard_core::RejectionKind {
/// #         switchyard_core::RejectionKind::BulkheadFull
/// #     }
/// # }
/// # switchyard_core::rejection::register::<Full>();
/// let classifier = IgnoreRejections::new(ErrorsAsFailures);
/// let refused: Result<(), BoxError> = Err(Box::new(Full));
/// let failed: Result<(), BoxError> = Err("connection reset".into());
/// assert_eq!(classifier.classify(refused.as_ref()), Outcome::Ignored);
/// assert_eq!(classifier.classify(failed.as_ref()), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoreRejections<C> {
    inner: C,
}

impl<C> IgnoreRejections<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }
}

impl<C, Res> Classify<Res, BoxError> for IgnoreRejections<C>
where
    C: Classify<Res, BoxError>,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        match result {
            Err(err) if crate::find_rejection(&**err).is_some() => Outcome::Ignored,
            other => self.inner.classify(other),
        }
    }
}

/// A classifier from a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

/// Builds a classifier from a closure over the call's result.
///
/// ```
/// use switchyard_core::{classify_fn, Classify, Outcome};
///
/// // Timeouts say nothing about the backend here; other errors are failures.
/// let classifier = classify_fn(|result: Result<&u16, &String>| match result {
///     Ok(_) => Outcome::Success,
///     Err(e) if e.contains("timeout") => Outcome::Ignored,
///     Err(_) => Outcome::Failure,
/// });
/// assert_eq!(classifier.classify(Err(&"timeout".to_string())), Outcome::Ignored);
/// assert_eq!(classifier.classify(Ok(&200)), Outcome::Success);
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn { f }
}

impl<F, Res, E> Classify<Res, E> for ClassifyFn<F>
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        (self.f)(result)
    }
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn")
            .field("f", &format_args!("{}", std::any::type_name::<F>()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_as_failures_counts_every_err() {
        let ok: Result<(), &str> = Ok(());
        let err: Result<(), &str> = Err("boom");
        assert_eq!(ErrorsAsFailures.classify(ok.as_ref()), Outcome::Success);
        assert_eq!(ErrorsAsFailures.classify(err.as_ref()), Outcome::Failure);
    }
}
