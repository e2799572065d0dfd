//! The route one name resolved to, and the future of a routed call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::{BoxError, Service, ServiceExt};

use crate::observe::outcome;
use crate::table::{Entry, Target};
use crate::transport::RouteService;

/// The route one name resolved to, taken from one snapshot: a service of its own.
pub struct Route<Req, Res> {
    pub(crate) entry: Arc<Entry<Req, Res>>,
}

impl<Req, Res> Clone for Route<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            entry: Arc::clone(&self.entry),
        }
    }
}

impl<Req, Res> fmt::Debug for Route<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("service", &self.entry.name)
            .field("strategy", &self.entry.strategy)
            .finish_non_exhaustive()
    }
}

impl<Req, Res> Route<Req, Res> {
    /// The service's name.
    pub fn service(&self) -> &str {
        &self.entry.name
    }

    /// The strategy serving it.
    pub fn strategy(&self) -> &str {
        &self.entry.strategy
    }

    /// Whether calls are switched off (`noop`): they answer `Res::default()` and call nothing.
    pub fn is_noop(&self) -> bool {
        matches!(self.entry.target, Target::Noop)
    }

    /// Why the route cannot be served, if it cannot.
    pub fn error(&self) -> Option<String> {
        self.entry.error()
    }
}

impl<Req, Res: Default> Service<Req> for Route<Req, Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = RouteFuture<Req, Res>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        dispatch(&self.entry, req)
    }
}

pub(crate) fn dispatch<Req, Res: Default>(
    entry: &Entry<Req, Res>,
    req: Req,
) -> RouteFuture<Req, Res> {
    match &entry.target {
        Target::Call(service) => RouteFuture::call(service.clone().oneshot(req)),
        Target::Noop => {
            entry.metrics.ok.increment(1);
            RouteFuture::ready(Ok(Res::default()))
        }
        Target::Broken(broken) => {
            let error = broken.to_error();
            entry.metrics.failed(outcome(&error));
            RouteFuture::ready(Err(error))
        }
    }
}

pin_project! {
    /// The response future of a routed call.
    pub struct RouteFuture<Req, Res> {
        #[pin]
        state: RouteState<Req, Res>,
    }
}

pin_project! {
    #[project = RouteStateProj]
    enum RouteState<Req, Res> {
        // The route's service is being readied and called.
        Call { #[pin] future: Oneshot<RouteService<Req, Res>, Req> },
        // Answered without calling anything (noop, broken route, unknown name).
        Ready { result: Option<Result<Res, BoxError>> },
    }
}

impl<Req, Res> RouteFuture<Req, Res> {
    fn call(future: Oneshot<RouteService<Req, Res>, Req>) -> Self {
        Self {
            state: RouteState::Call { future },
        }
    }

    pub(crate) fn ready(result: Result<Res, BoxError>) -> Self {
        Self {
            state: RouteState::Ready {
                result: Some(result),
            },
        }
    }
}

impl<Req, Res> fmt::Debug for RouteFuture<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            RouteState::Call { .. } => "RouteFuture::Call",
            RouteState::Ready { .. } => "RouteFuture::Ready",
        })
    }
}

impl<Req, Res> Future for RouteFuture<Req, Res> {
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RouteStateProj::Call { future } => future.poll(cx),
            RouteStateProj::Ready { result } => {
                Poll::Ready(result.take().expect("RouteFuture polled after completion"))
            }
        }
    }
}
