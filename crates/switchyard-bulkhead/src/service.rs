//! The bulkhead service: a slot in `poll_ready`, the call in `call`, nothing else.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use switchyard_core::BoxError;
use tower::Service;

use crate::admission::{AdmissionController, Permit};
use crate::config::BulkheadPolicy;
use crate::error::BulkheadFull;
use crate::future::ResponseFuture;
use crate::signal::{NoSignal, SignalResponse};

type Wait = Pin<Box<dyn Future<Output = Result<Permit, BulkheadFull>> + Send + Sync>>;

/// Where an instance without a slot is between `poll_ready` and `call`.
enum Pending {
    Idle,
    /// `call` answers with this error without calling the inner service.
    Refused(BulkheadFull),
    /// Queue policy: waiting for a slot. Boxed: built only when every slot is taken.
    Waiting(Wait),
}

/// A bulkhead around a service. Built by [`BulkheadLayer`](crate::BulkheadLayer).
///
/// Clones share the slots but not readiness: a clone starts without a slot, so the slot taken
/// by one instance's `poll_ready` is used by that instance's `call` only (as tower's
/// `ConcurrencyLimit` does with its semaphore permit).
///
/// `M` marks the responses of calls admitted over capacity (see
/// [`BulkheadLayer::signal_responses`](crate::BulkheadLayer::signal_responses)).
pub struct Bulkhead<S, M = NoSignal> {
    inner: S,
    controller: AdmissionController,
    permit: Option<Permit>,
    pending: Pending,
    signal: M,
}

impl<S, M> Bulkhead<S, M> {
    pub(crate) fn new(inner: S, controller: AdmissionController, signal: M) -> Self {
        Self {
            inner,
            controller,
            permit: None,
            pending: Pending::Idle,
            signal,
        }
    }

    /// The admission controller this service uses: stats, pressure, slots for other work.
    pub fn controller(&self) -> &AdmissionController {
        &self.controller
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

    /// Takes a slot, or settles on a refusal; pending while a queued wait runs.
    fn admit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.pending {
                Pending::Refused(_) => return Poll::Ready(()),
                Pending::Waiting(wait) => {
                    match ready!(wait.as_mut().poll(cx)) {
                        Ok(permit) => {
                            self.permit = Some(permit);
                            self.pending = Pending::Idle;
                        }
                        Err(full) => self.pending = Pending::Refused(full),
                    }
                    return Poll::Ready(());
                }
                Pending::Idle => {
                    if let Some(permit) = self.controller.try_slot() {
                        self.permit = Some(permit);
                        return Poll::Ready(());
                    }
                    self.pending = if let BulkheadPolicy::Queue { .. } = self.controller.policy() {
                        let controller = self.controller.clone();
                        Pending::Waiting(Box::pin(
                            async move { controller.acquire_uncounted().await },
                        ))
                    } else {
                        Pending::Refused(self.controller.refusal(crate::FullReason::Full))
                    };
                }
            }
        }
    }
}

impl<S, M, Req> Service<Req> for Bulkhead<S, M>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    M: SignalResponse<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            if let Pending::Refused(_) = self.pending {
                // A refusal is decided afresh at every `poll_ready`, as `tower::load_shed`
                // does: a slot may have freed since.
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
            // A dead inner service: give the slot back.
            self.permit = None;
        }
        Poll::Ready(result.map_err(Into::into))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(permit) = self.permit.take() {
            return ResponseFuture::called(self.inner.call(req), permit, self.signal.clone());
        }
        match std::mem::replace(&mut self.pending, Pending::Idle) {
            Pending::Refused(error) => {
                self.controller.count_refusal(&error);
                ResponseFuture::refused(error)
            }
            Pending::Idle | Pending::Waiting(_) => panic!("poll_ready must be called first"),
        }
    }
}

impl<S: Clone, M: Clone> Clone for Bulkhead<S, M> {
    fn clone(&self) -> Self {
        // Shares the slots, starts without one: a slot belongs to the instance that took it.
        Self::new(
            self.inner.clone(),
            self.controller.clone(),
            self.signal.clone(),
        )
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Bulkhead<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("controller", &self.controller)
            .field("holds_slot", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
