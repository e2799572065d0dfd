//! Answering from a fallback service when the primary fails or is refused.
//!
//! A remote call that fails is served locally instead, so a caller
//! degrades rather than errs. In tower a caller that gives up drops the response future, and
//! then nothing runs at all: a cancelled call never reaches the fallback.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use metrics::Counter;
use pin_project_lite::pin_project;
use switchyard_core::{BoxError, Classify, ErrorsAsFailures, Outcome};
use switchyard_retry::{CloneRequest, Replay};
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

/// Sends a call to `fallback` when the primary's result is a failure (every error by default,
/// including a refusal by another layer), if the request could be copied before the primary
/// took it (`Clone` requests by default).
pub struct FallbackLayer<F, C = ErrorsAsFailures, R = CloneRequest> {
    shared: Arc<Shared>,
    fallback: F,
    classifier: C,
    replay: R,
}

struct Shared {
    name: Arc<str>,
    used: Counter,
}

impl<F> FallbackLayer<F> {
    /// Falls back to `fallback` for the stack named `name` (in metrics and events).
    pub fn new(name: impl Into<Arc<str>>, fallback: F) -> Self {
        let name = name.into();
        Self {
            shared: Arc::new(Shared {
                used: metrics::counter!("switchyard_resilience_fallbacks_total", "stack" => name.to_string()),
                name,
            }),
            fallback,
            classifier: ErrorsAsFailures,
            replay: CloneRequest,
        }
    }
}

impl<F, C, R> FallbackLayer<F, C, R> {
    /// Decides with `classifier` which primary results fall back (a failure does).
    pub fn with_classifier<C2>(self, classifier: C2) -> FallbackLayer<F, C2, R> {
        FallbackLayer {
            shared: self.shared,
            fallback: self.fallback,
            classifier,
            replay: self.replay,
        }
    }

    /// Copies requests for the fallback with `replay`, for request types that are not `Clone`.
    pub fn with_replay<R2>(self, replay: R2) -> FallbackLayer<F, C, R2> {
        FallbackLayer {
            shared: self.shared,
            fallback: self.fallback,
            classifier: self.classifier,
            replay,
        }
    }
}

impl<F: Clone, C: Clone, R: Clone> Clone for FallbackLayer<F, C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            fallback: self.fallback.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<F, C, R> fmt::Debug for FallbackLayer<F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("stack", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone, C: Clone, R: Clone> Layer<S> for FallbackLayer<F, C, R> {
    type Service = Fallback<S, F, C, R>;

    fn layer(&self, primary: S) -> Self::Service {
        Fallback {
            primary,
            fallback: Arc::new(self.fallback.clone()),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A primary service with a fallback. Built by [`FallbackLayer`].
pub struct Fallback<S, F, C = ErrorsAsFailures, R = CloneRequest> {
    primary: S,
    // Shared: a call takes a reference count, and clones the service only when it falls back.
    fallback: Arc<F>,
    classifier: C,
    replay: R,
    shared: Arc<Shared>,
}

impl<S: Clone, F, C: Clone, R: Clone> Clone for Fallback<S, F, C, R> {
    fn clone(&self) -> Self {
        Self {
            primary: self.primary.clone(),
            fallback: Arc::clone(&self.fallback),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, F, C, R> fmt::Debug for Fallback<S, F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("primary", &self.primary)
            .field("stack", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, F, C, R, Req> Service<Req> for Fallback<S, F, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Service<Req, Response = S::Response> + Clone,
    F::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
    R: Replay<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FallbackFuture<S::Future, F, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The fallback is readied only when used: it is the spare, not a second dependency.
        self.primary.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let spare = self
            .replay
            .replay(&req)
            .ok()
            .map(|copy| (copy, Arc::clone(&self.fallback), self.classifier.clone()));
        FallbackFuture {
            state: State::Primary {
                future: self.primary.call(req),
                spare,
                shared: Arc::clone(&self.shared),
            },
        }
    }
}

pin_project! {
    /// The response future of [`Fallback`]: the primary call, then, if it failed, the
    /// fallback's.
    pub struct FallbackFuture<P, F, C, Req>
    where
        F: Service<Req>,
    {
        #[pin]
        state: State<P, F, C, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<P, F, C, Req>
    where
        F: Service<Req>,
    {
        Primary {
            #[pin]
            future: P,
            spare: Option<(Req, Arc<F>, C)>,
            shared: Arc<Shared>,
        },
        Fallback {
            #[pin]
            future: Oneshot<F, Req>,
        },
    }
}

impl<P, F, C, Req, T, E> Future for FallbackFuture<P, F, C, Req>
where
    P: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    F: Service<Req, Response = T> + Clone,
    F::Error: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let future = match this.state.as_mut().project() {
                StateProj::Fallback { future } => {
                    return Poll::Ready(ready!(future.poll(cx)).map_err(Into::into));
                }
                StateProj::Primary {
                    future,
                    spare,
                    shared,
                } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let failed = spare.as_ref().is_some_and(|(_, _, classifier)| {
                        classifier.classify(result.as_ref()) == Outcome::Failure
                    });
                    let Some((req, fallback, _)) = spare.take().filter(|_| failed) else {
                        return Poll::Ready(result);
                    };
                    shared.used.increment(1);
                    tracing::debug!(
                        target: "switchyard_resilience",
                        stack = %shared.name,
                        cause = %result.as_ref().err().map_or_else(|| "failed response".to_owned(), ToString::to_string),
                        "falling back"
                    );
                    F::clone(&fallback).oneshot(req)
                }
            };
            this.state.set(State::Fallback { future });
        }
    }
}

impl<P, F: Service<Req>, C, Req> fmt::Debug for FallbackFuture<P, F, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}
