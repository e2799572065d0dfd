//! The switchable-service layer: one named service, dispatched through the router.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{BoxError, Layer, Service};

use crate::route::RouteFuture;
use crate::router::Router;

/// Makes one named service switchable; see [`Router::layer_for`].
pub struct RouteLayer<Req, Res> {
    pub(crate) router: Router<Req, Res>,
    pub(crate) name: Arc<str>,
}

impl<Req, Res> Clone for RouteLayer<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

impl<Req, Res> fmt::Debug for RouteLayer<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLayer")
            .field("name", &self.name)
            .finish()
    }
}

impl<S, Req, Res> Layer<S> for RouteLayer<Req, Res>
where
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
    type Service = Routed<Req, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        self.router.register_local(Arc::clone(&self.name), inner);
        Routed {
            router: self.router.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

/// The service a [`RouteLayer`] returns: calls the named service through the router.
pub struct Routed<Req, Res> {
    router: Router<Req, Res>,
    name: Arc<str>,
}

impl<Req, Res> Clone for Routed<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

impl<Req, Res> fmt::Debug for Routed<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed").field("name", &self.name).finish()
    }
}

impl<Req, Res: Default> Service<Req> for Routed<Req, Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = RouteFuture<Req, Res>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.router.dispatch(&self.name, req)
    }
}
