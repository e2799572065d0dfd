//! The breaker service: admission in `poll_ready`, the call in `call`, nothing else.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use switchyard_core::{BoxError, Classify, ErrorsAsFailures};
use tokio::time::Instant;
use tower::Service;

use crate::config::BreakerMode;
use crate::error::BreakerOpen;
use crate::future::{Guard, ResponseFuture};
use crate::handle::{BreakerHandle, Shared};
use crate::state::Permit;

type Wait = Pin<Box<dyn Future<Output = Permit> + Send + Sync>>;

/// Where an instance that holds no permit is between `poll_ready` and `call`. Kept apart from
/// the permit so the admitted path tests one `Option` and never this enum.
enum Pending {
    /// Not readied yet.
    Idle,
    /// Refused (fail-fast mode): `call` answers with this error without calling the inner
    /// service.
    Refused(BreakerOpen),
    /// Backpressure mode: waiting for the breaker to admit a call. Boxed because it is only
    /// ever built while the breaker refuses calls, off the hot path.
    Waiting(Wait),
}

/// A circuit breaker around a service. Built by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// Clones share one breaker, but not readiness: a clone starts un-readied, so a permit taken
/// by one instance's `poll_ready` is used by that instance's `call` only (tower's
/// `ConcurrencyLimit` does the same for its semaphore permit).
pub struct CircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    /// Admitted: the permit `call` will use (given back if the instance is dropped first).
    permit: Option<Guard>,
    pending: Pending,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        Self {
            inner,
            shared,
            classifier,
            permit: None,
            pending: Pending::Idle,
        }
    }

    /// The handle of the breaker this service uses.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Waits until the breaker admits a call, then takes the permit. `notified` is armed before
/// each `acquire`, so no wake-up between the two can be lost; the timer covers the end of an
/// open wait and of a bounded half-open spell, which no other caller may be there to notice.
fn wait_for_admission(shared: Arc<Shared>) -> Wait {
    Box::pin(async move {
        loop {
            let notified = shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let refusal = match shared.circuit.acquire(Instant::now) {
                Ok(permit) => return permit,
                Err(refusal) => refusal,
            };
            match refusal.retry_after.or(refusal.recheck_in) {
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    })
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            if let Pending::Refused(_) = self.pending {
                // A refusal is decided afresh at every `poll_ready`, as `tower::load_shed`
                // does: the breaker may have let go since.
                self.pending = Pending::Idle;
            }
            ready!(self.admit(cx));
            if self.permit.is_none() {
                // Refused: ready, and `call` answers with the rejection.
                return Poll::Ready(Ok(()));
            }
        }
        let result = ready!(self.inner.poll_ready(cx));
        if result.is_err() {
            // A dead inner service: give the permit back, record nothing.
            self.permit = None;
        }
        Poll::Ready(result.map_err(Into::into))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(guard) = self.permit.take() {
            if guard.is_current() {
                let start = guard.shared().slow_call_duration.map(|_| Instant::now());
                return ResponseFuture::called(
                    self.inner.call(req),
                    guard,
                    self.classifier.clone(),
                    start,
                );
            }
            // The breaker opened (or began a new half-open spell) after this instance was
            // readied: the permit is void, and the call is refused like any other.
            drop(guard);
            let retry_after = self.shared.circuit.open_remaining(Instant::now());
            let error = BreakerOpen::new(Arc::clone(&self.shared.name), retry_after);
            return ResponseFuture::refused(error, &self.shared);
        }
        match std::mem::replace(&mut self.pending, Pending::Idle) {
            Pending::Refused(error) => ResponseFuture::refused(error, &self.shared),
            Pending::Idle | Pending::Waiting(_) => panic!("poll_ready must be called first"),
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Asks the breaker for a permit. Ready with `self.permit` set (admitted) or with
    /// `self.pending` refused; pending while a backpressure wait runs.
    fn admit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.pending {
                Pending::Refused(_) => return Poll::Ready(()),
                Pending::Waiting(wait) => {
                    let permit = ready!(wait.as_mut().poll(cx));
                    self.pending = Pending::Idle;
                    self.permit = Some(Guard::new(Arc::clone(&self.shared), permit));
                    return Poll::Ready(());
                }
                Pending::Idle => match self.shared.circuit.acquire(Instant::now) {
                    Ok(permit) => {
                        self.permit = Some(Guard::new(Arc::clone(&self.shared), permit));
                        return Poll::Ready(());
                    }
                    Err(refusal) => {
                        self.pending = match self.shared.mode {
                            BreakerMode::FailFast => Pending::Refused(BreakerOpen::new(
                                Arc::clone(&self.shared.name),
                                refusal.retry_after,
                            )),
                            BreakerMode::Backpressure => {
                                Pending::Waiting(wait_for_admission(Arc::clone(&self.shared)))
                            }
                        };
                    }
                },
            }
        }
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        // The clone shares the breaker but starts un-readied: a permit belongs to the
        // instance whose `poll_ready` took it.
        Self::new(
            self.inner.clone(),
            Arc::clone(&self.shared),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.name)
            .field("state", &self.shared.circuit.state())
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
