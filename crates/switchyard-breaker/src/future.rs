//! The response future: records the call's outcome when the inner future resolves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use switchyard_core::{BoxError, Classify, Outcome};
use tokio::time::Instant;

use crate::error::BreakerOpen;
use crate::handle::Shared;
use crate::state::Permit;

/// An admitted call's permit. Recording consumes it; dropping it unrecorded (the service was
/// dropped after `poll_ready`, or the caller dropped the response future) gives it back, so a
/// cancelled half-open probe frees its slot instead of wedging the breaker.
#[derive(Debug)]
pub(crate) struct Guard {
    shared: Arc<Shared>,
    permit: Option<Permit>,
}

impl Guard {
    #[inline]
    pub(crate) fn new(shared: Arc<Shared>, permit: Permit) -> Self {
        Self {
            shared,
            permit: Some(permit),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the breaker still honours this permit.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        self.permit.is_some_and(|p| self.shared.circuit.admits(p))
    }

    /// Records the outcome of a call that started at `start` (when it was timed).
    #[inline]
    pub(crate) fn finish(&mut self, outcome: Outcome, start: Option<Instant>) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let shared = &*self.shared;
        let end = start.map(|_| Instant::now());
        let slow = match (start, end, shared.slow_call_duration) {
            (Some(start), Some(end), Some(limit)) => end.saturating_duration_since(start) > limit,
            _ => false,
        };
        match outcome {
            Outcome::Success => shared.metrics.success.increment(1),
            Outcome::Failure => shared.metrics.failure.increment(1),
            Outcome::Ignored => shared.metrics.ignored.increment(1),
        }
        if slow {
            shared.metrics.slow.increment(1);
        }
        shared.circuit.record(permit, outcome, slow, move || {
            end.unwrap_or_else(Instant::now)
        });
        if permit.is_probe() {
            shared.wake.notify_waiters();
        }
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && self.shared.circuit.cancel(permit)
        {
            self.shared.wake.notify_waiters();
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker): the inner call with
    /// its permit, or an immediately ready [`BreakerOpen`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            guard: Guard,
            classifier: C,
            start: Option<Instant>,
        },
        Refused {
            error: Option<BreakerOpen>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: Guard, classifier: C, start: Option<Instant>) -> Self {
        Self {
            kind: Kind::Called {
                future,
                guard,
                classifier,
                start,
            },
        }
    }

    pub(crate) fn refused(error: BreakerOpen, shared: &Shared) -> Self {
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        shared.metrics.rejected.increment(1);
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                classifier,
                start,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                guard.finish(classifier.classify(result.as_ref()), *start);
                Poll::Ready(result)
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
