//! Readiness, the tower way: an endpoint whose `poll_ready` answered `Pending` is marked not
//! ready (left out of the pick while another eligible endpoint is ready), and a background
//! task, woken by the endpoint itself, drives a clone of its service until it is ready again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use switchyard_core::sync::lock;
use tower::Service;

use crate::balance::BoxEndpoint;
use crate::endpoint::EndpointView;
use crate::shared::Shared;

// === impl Shared ===

impl<Req: 'static, Res: 'static> Shared<BoxEndpoint<Req, Res>, Req> {
    /// Marks `view` ready or not, rebuilding the snapshot if that changed (and `view` is still
    /// a member).
    pub(crate) fn set_pending(&self, view: &EndpointView, pending: bool) {
        if view.pending.swap(pending, Ordering::AcqRel) == pending {
            return;
        }
        let members = lock(&self.members);
        if members.iter().any(|m| std::ptr::eq(&*m.view, view)) {
            tracing::debug!(
                target: "switchyard_balance",
                balancer = %self.name,
                endpoint = view.name(),
                ready = !pending,
                "endpoint readiness changed"
            );
            self.rebuild(&members);
        }
    }

    /// The service `view` stands for now, unless it was removed.
    fn service_of(&self, view: &EndpointView) -> Option<BoxEndpoint<Req, Res>> {
        lock(&self.members)
            .iter()
            .find(|m| std::ptr::eq(&*m.view, view))
            .map(|m| m.service.clone())
    }

    /// Starts driving `view`'s readiness in the background, unless a task already does.
    /// Answers whether a task drives it (not without a tokio runtime to run one).
    pub(crate) fn probe(self: &Arc<Self>, view: &Arc<EndpointView>) -> bool {
        if view.probing.swap(true, Ordering::AcqRel) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            view.probing.store(false, Ordering::Release);
            return false;
        };
        runtime.spawn(drive(Arc::clone(self), Arc::clone(view)));
        true
    }
}

/// Drives one endpoint's readiness: polls a clone of its service until it is ready, marking
/// the endpoint not ready meanwhile (if it was not ready at once), then drops the clone, so
/// nothing it reserved (a `Buffer` slot, a concurrency permit) is held. Woken by the service,
/// never by a timer: no busy loop. Ends when the endpoint is removed; starts over with the new
/// service when it is replaced. An `Err` from `poll_ready` marks it ready again: the calls sent
/// to it then fail with that error, which outlier detection and health checks act on.
async fn drive<Req: 'static, Res: 'static>(
    shared: Arc<Shared<BoxEndpoint<Req, Res>, Req>>,
    view: Arc<EndpointView>,
) {
    // However the task ends — done, the endpoint removed, a panic in the endpoint's
    // `poll_ready`, or its runtime shutting down — the endpoint is marked ready again and
    // the next call that finds it not ready starts a new task: it never stays out with
    // nothing driving it.
    let _done = Driven {
        shared: Arc::clone(&shared),
        view: Arc::clone(&view),
    };
    loop {
        let gone = view.gone.notified();
        let mut gone = std::pin::pin!(gone);
        gone.as_mut().enable();
        let service = if view.removed.load(Ordering::Acquire) {
            None
        } else {
            shared.service_of(&view)
        };
        let Some(mut service) = service else {
            return;
        };
        let mut first = true;
        let outcome = std::future::poll_fn(|cx| {
            if gone.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let poll = service.poll_ready(cx);
            if first && poll.is_pending() {
                shared.set_pending(&view, true);
            }
            first = false;
            poll.map(Some)
        })
        .await;
        let Some(outcome) = outcome else {
            continue;
        };
        drop(service);
        if let Err(error) = outcome {
            tracing::debug!(
                target: "switchyard_balance",
                balancer = %shared.name,
                endpoint = view.name(),
                %error,
                "endpoint's poll_ready failed"
            );
        }
        return;
    }
}

/// Ends a readiness task: see `drive`.
struct Driven<Req: 'static, Res: 'static> {
    shared: Arc<Shared<BoxEndpoint<Req, Res>, Req>>,
    view: Arc<EndpointView>,
}

impl<Req: 'static, Res: 'static> Drop for Driven<Req, Res> {
    fn drop(&mut self) {
        // In this order: a call that finds the endpoint not ready after `probing` is cleared
        // starts a new task, which marks it again.
        self.view.probing.store(false, Ordering::Release);
        self.shared.set_pending(&self.view, false);
    }
}
