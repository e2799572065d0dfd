//! The balancer's response future: readies the chosen endpoint's clone, sends the request,
//! and records the outcome; picks again if the endpoint leaves before the request is sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use switchyard_core::Classify;
use tokio::sync::futures::OwnedNotified;
use tower::{BoxError, Service};

use crate::balance::BoxEndpoint;
use crate::endpoint::EndpointView;
use crate::shared::Shared;
use crate::snapshot::Chosen;

pin_project! {
    /// The response future of [`Balance`](crate::Balance).
    pub struct BalanceFuture<Req, Res, C> {
        state: State<Req, Res, C>,
    }
}

type CallOf<Req, Res, C> = Call<BoxEndpoint<Req, Res>, Req, C>;

enum State<Req, Res, C> {
    /// Waiting for the chosen endpoint's clone to be ready.
    Readying(Readying<Req, Res, C>),
    Calling {
        future: <BoxEndpoint<Req, Res> as Service<Req>>::Future,
        call: Option<CallOf<Req, Res, C>>,
    },
    Refused {
        error: Option<BoxError>,
    },
}

/// A request not sent yet, and the endpoint it waits for.
struct Readying<Req, Res, C> {
    service: Option<BoxEndpoint<Req, Res>>,
    /// The service's generation when it was picked.
    generation: u32,
    req: Option<Req>,
    /// Set once the endpoint was found not ready: wakes the call if the endpoint leaves
    /// (removed, or its service replaced), so it picks again instead of waiting on it.
    gone: Option<Pin<Box<OwnedNotified>>>,
    call: Option<CallOf<Req, Res, C>>,
}

impl<Req, Res, C> BalanceFuture<Req, Res, C> {
    /// A call sent to `chosen` at `now`.
    pub(crate) fn new(
        chosen: Chosen<BoxEndpoint<Req, Res>>,
        req: Req,
        shared: Arc<Shared<BoxEndpoint<Req, Res>, Req>>,
        classifier: C,
        now: u64,
    ) -> Self {
        chosen.view.start_call(now);
        Self {
            state: State::Readying(Readying {
                service: Some(chosen.service),
                generation: chosen.generation,
                req: Some(req),
                gone: None,
                call: Some(Call {
                    view: chosen.view,
                    shared,
                    started: now,
                    classifier,
                    finished: false,
                }),
            }),
        }
    }

    /// A call refused before it was sent.
    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<Req, Res, C> fmt::Debug for BalanceFuture<Req, Res, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BalanceFuture")
    }
}

impl<Req, Res, C> Future for BalanceFuture<Req, Res, C>
where
    C: Classify<Res, BoxError>,
    Req: 'static,
    Res: 'static,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.project().state;
        loop {
            match state {
                State::Readying(readying) => {
                    if readying.endpoint_left(cx) {
                        // The request was not sent: pick again.
                        if let Err(error) = readying.pick_again() {
                            *state = State::Refused { error: Some(error) };
                        }
                        continue;
                    }
                    match readying.poll_endpoint(cx) {
                        Poll::Pending if readying.gone.is_some() => return Poll::Pending,
                        Poll::Pending => {
                            readying.wait_on_endpoint();
                            // Poll the notification once, so its wake is registered.
                            continue;
                        }
                        Poll::Ready(Err(error)) => {
                            let call = readying.call.take();
                            *state = State::Refused { error: None };
                            return Poll::Ready(finish(call, Err(error)));
                        }
                        Poll::Ready(Ok(())) => *state = readying.send(),
                    }
                }
                State::Calling { future, call } => {
                    let result = std::task::ready!(future.as_mut().poll(cx));
                    return Poll::Ready(finish(call.take(), result));
                }
                State::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("BalanceFuture polled after completion")));
                }
            }
        }
    }
}

/// Records `result` on `call` (then dropped: the call is no longer in flight), and hands it on.
fn finish<S: Clone, Req, C, Res>(
    call: Option<Call<S, Req, C>>,
    result: Result<Res, BoxError>,
) -> Result<Res, BoxError>
where
    C: Classify<Res, BoxError>,
{
    if let Some(mut call) = call {
        call.finish(result.as_ref());
    }
    result
}

// === impl Readying ===

impl<Req: 'static, Res: 'static, C> Readying<Req, Res, C> {
    fn call_mut(&mut self) -> &mut CallOf<Req, Res, C> {
        self.call
            .as_mut()
            .expect("BalanceFuture polled after completion")
    }

    /// Whether the endpoint this call waits on left (removed, or its service replaced). Only
    /// a call that found its endpoint not ready watches for that.
    fn endpoint_left(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(notified) = &mut self.gone else {
            return false;
        };
        let woken = notified.as_mut().poll(cx).is_ready();
        let generation = self.generation;
        let view = &self.call_mut().view;
        let left = woken
            || view.removed.load(Ordering::Acquire)
            || view.generation.load(Ordering::Acquire) != generation;
        if left {
            self.gone = None;
        }
        left
    }

    /// Picks again for the request, its endpoint gone: moves the call to the new endpoint, or
    /// fails with [`NoAvailableEndpoint`](crate::NoAvailableEndpoint) if none is eligible.
    fn pick_again(&mut self) -> Result<(), BoxError> {
        let shared = Arc::clone(&self.call_mut().shared);
        let now = shared.now();
        let hint = shared
            .hint
            .as_ref()
            .and_then(|f| f(self.req.as_ref().expect("request taken once")));
        let Some(chosen) = shared.choose(now, hint.as_ref()) else {
            // Not a measurement of the endpoint it left.
            self.call_mut().finished = true;
            return Err(Box::new(shared.none_available()));
        };
        let call = self.call_mut();
        call.view.in_flight.fetch_sub(1, Ordering::Relaxed);
        chosen.view.start_call(now);
        call.view = chosen.view;
        call.started = now;
        self.service = Some(chosen.service);
        self.generation = chosen.generation;
        Ok(())
    }

    fn poll_endpoint(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.service
            .as_mut()
            .expect("BalanceFuture polled after completion")
            .poll_ready(cx)
    }

    /// The endpoint was picked while not ready: this call waits for it (unless it leaves);
    /// later ones go elsewhere until a background task sees it ready.
    fn wait_on_endpoint(&mut self) {
        let call = self.call_mut();
        let mut notified = Box::pin(Arc::clone(&call.view.gone).notified_owned());
        notified.as_mut().enable();
        call.shared.set_pending(&call.view, true);
        if !call.shared.probe(&call.view) {
            // Nothing could bring it back (no runtime): do not leave it out.
            call.shared.set_pending(&call.view, false);
        }
        self.gone = Some(notified);
    }

    /// Sends the request to the ready endpoint.
    fn send(&mut self) -> State<Req, Res, C> {
        let req = self.req.take().expect("request taken once");
        let future = self
            .service
            .as_mut()
            .expect("BalanceFuture polled after completion")
            .call(req);
        State::Calling {
            future,
            call: self.call.take(),
        }
    }
}

// === impl Call ===

/// One call's bookkeeping: released on completion, or on drop if the call is cancelled.
struct Call<S, Req, C> {
    view: Arc<EndpointView>,
    shared: Arc<Shared<S, Req>>,
    /// When the call started, in nanoseconds since the balancer's epoch.
    started: u64,
    classifier: C,
    /// Whether `finish` ran (the call completed rather than being dropped).
    finished: bool,
}

impl<S: Clone, Req, C> Call<S, Req, C> {
    fn finish<T>(&mut self, result: Result<&T, &BoxError>)
    where
        C: Classify<T, BoxError>,
    {
        self.finished = true;
        let now = self.shared.now();
        self.view
            .record_latency(Duration::from_nanos(now.saturating_sub(self.started)), now);
        let outcome = self.classifier.classify(result);
        match outcome {
            switchyard_core::Outcome::Success => {
                self.view.successes.fetch_add(1, Ordering::Relaxed);
            }
            switchyard_core::Outcome::Failure => {
                self.view.failures.fetch_add(1, Ordering::Relaxed);
            }
            switchyard_core::Outcome::Ignored => return,
        }
        self.shared.record_outcome(&self.view, outcome, now);
    }
}

impl<S, Req, C> Drop for Call<S, Req, C> {
    fn drop(&mut self) {
        if !self.finished {
            // Cancelled (a caller's timeout): its time so far still says how slow the endpoint
            // is, so a hung endpoint does not look fast to `least-latency`.
            let now = self.shared.now();
            self.view
                .record_latency(Duration::from_nanos(now.saturating_sub(self.started)), now);
        }
        self.view.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
