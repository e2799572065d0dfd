//! A per-call deadline: tower's `Timeout`, with its `Elapsed` turned into core's `Timeout`
//! rejection so that retries, breakers and protocol mappings recognise it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use switchyard_core::{BoxError, Rejection, RejectionKind};
use tower::Layer;
use tower::Service;
use tower::timeout::error::Elapsed;

/// A call that took longer than its deadline. `Display` reads `timed out after 2s: <name>`;
/// maps to HTTP 504 and gRPC `DEADLINE_EXCEEDED`, and is retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    name: Arc<str>,
    after: Duration,
}

impl TimedOut {
    /// The name of the stack (route, provider) whose deadline passed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The deadline that passed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {}: {}",
            humantime::format_duration(self.after),
            self.name
        )
    }
}

impl std::error::Error for TimedOut {}

impl Rejection for TimedOut {
    fn kind(&self) -> RejectionKind {
        RejectionKind::Timeout
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.name)
    }
}

/// Fails calls that take longer than a deadline with [`TimedOut`] (tower's `Timeout` inside).
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    name: Arc<str>,
    after: Duration,
}

impl TimeoutLayer {
    /// Calls through `name` fail with [`TimedOut`] after `after`.
    pub fn new(name: impl Into<Arc<str>>, after: Duration) -> Self {
        switchyard_core::rejection::register::<TimedOut>();
        Self {
            name: name.into(),
            after,
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner: tower::timeout::Timeout::new(inner, self.after),
            name: Arc::clone(&self.name),
            after: self.after,
        }
    }
}

/// A deadline around a service. Built by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: tower::timeout::Timeout<S>,
    name: Arc<str>,
    after: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<tower::timeout::future::ResponseFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(req),
            name: Arc::clone(&self.name),
            after: self.after,
        }
    }
}

pin_project! {
    /// The response future of [`Timeout`].
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        name: Arc<str>,
        after: Duration,
    }
}

impl<F, T> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(ready!(this.inner.poll(cx)).map_err(|err| {
            if err.is::<Elapsed>() {
                Box::new(TimedOut {
                    name: Arc::clone(this.name),
                    after: *this.after,
                }) as BoxError
            } else {
                err
            }
        }))
    }
}
#[cfg(feature = "axum")]
switchyard_core::rejection_into_response!(TimedOut);
