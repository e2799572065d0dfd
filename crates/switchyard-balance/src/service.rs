//! The balancer as a tower `Service`: `poll_ready` waits only while no eligible endpoint is
//! ready; `call` picks one and hands the request to the response future.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use switchyard_core::Classify;
use tower::{BoxError, Service};

use crate::balance::Balance;
use crate::future::BalanceFuture;

impl<Req, Res, C> Service<Req> for Balance<Req, Res, C>
where
    C: Classify<Res, BoxError> + Clone,
    Req: 'static,
    Res: 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = BalanceFuture<Req, Res, C>;

    /// Ready when an eligible endpoint is ready, or when none is eligible (the call then fails
    /// with [`NoAvailableEndpoint`](crate::NoAvailableEndpoint), as `tower::load_shed` would).
    /// While every eligible endpoint is not ready, waits — woken when one becomes ready, never
    /// by polling.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The common case costs one snapshot load: no clock read unless every eligible
        // endpoint is not ready.
        if !self.shared.snapshot.load().waiting {
            self.waiting = None;
            self.until = None;
            return Poll::Ready(Ok(()));
        }
        loop {
            let snapshot = self.shared.current_at(self.shared.now());
            if !snapshot.waiting {
                self.waiting = None;
                self.until = None;
                return Poll::Ready(Ok(()));
            }
            let next_return = snapshot.next_return;
            drop(snapshot);
            // An ejected endpoint coming back also ends the wait.
            if next_return != u64::MAX {
                let at = self.shared.epoch + Duration::from_nanos(next_return.saturating_sub(1));
                match &mut self.until {
                    Some(sleep) if sleep.deadline() == at => {}
                    until => *until = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                if let Some(sleep) = &mut self.until
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    self.until = None;
                    continue;
                }
            }
            match &mut self.waiting {
                // Registered before the snapshot is read again, so a wake between the two is
                // not missed.
                None => {
                    let mut notified = Box::pin(Arc::clone(&self.shared.ready).notified_owned());
                    notified.as_mut().enable();
                    self.waiting = Some(notified);
                }
                Some(notified) => {
                    std::task::ready!(notified.as_mut().poll(cx));
                    self.waiting = None;
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // One clock read per call here and one when it ends (each is a thread-local lookup).
        let now = self.shared.now();
        let hint = self.shared.hint.as_ref().and_then(|f| f(&req));
        match self.shared.choose(now, hint.as_ref()) {
            Some(chosen) => BalanceFuture::new(
                chosen,
                req,
                Arc::clone(&self.shared),
                self.classifier.clone(),
                now,
            ),
            None => BalanceFuture::refused(Box::new(self.shared.none_available())),
        }
    }
}
