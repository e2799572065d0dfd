//! Transports: how a route's row becomes a tower `Service`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use crate::error::Panic;

/// The service a route dispatches to once built: cloneable, `Send + Sync`, errors boxed.
pub type RouteService<Req, Res> = BoxCloneSyncService<Req, Res, BoxError>;

/// What a transport factory is given to build a route's service from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RouteSpec<'a> {
    /// The route's service name.
    pub service: &'a str,
    /// The route's strategy (the name the factory was registered under).
    pub strategy: &'a str,
    /// The row's `endpoint` column.
    pub endpoint: Option<&'a str>,
    /// The `transport` object of the row's config (an empty object when absent).
    pub options: &'a Value,
}

/// Builds the service for a route of one strategy from its endpoint and options.
///
/// Called on reload, off the request path, only when a route is added or its row changed; an
/// error marks only that route as broken (calls get [`FactoryFailed`](crate::FactoryFailed)
/// naming it). A closure `Fn(&RouteSpec<'_>) -> Result<RouteService<Req, Res>, BoxError>`
/// is a factory.
///
/// The built service is dropped when its route is removed or rebuilt and the last in-flight
/// call on it has finished; resources it holds (connection pools) close then.
pub trait TransportFactory<Req, Res>: Send + Sync + 'static {
    /// Builds the route's service.
    ///
    /// # Errors
    ///
    /// The endpoint or options are not usable by this transport.
    fn build(&self, spec: &RouteSpec<'_>) -> Result<RouteService<Req, Res>, BoxError>;
}

impl<F, Req, Res> TransportFactory<Req, Res> for F
where
    F: Fn(&RouteSpec<'_>) -> Result<RouteService<Req, Res>, BoxError> + Send + Sync + 'static,
{
    fn build(&self, spec: &RouteSpec<'_>) -> Result<RouteService<Req, Res>, BoxError> {
        self(spec)
    }
}

/// Turns panics of the inner service (in `call` or in its future) into a [`Panic`] error, so
/// the layers above see a failed call rather than a crashed task.
#[derive(Clone)]
pub(crate) struct CatchPanic<S> {
    inner: S,
    service: Arc<str>,
}

impl<S> CatchPanic<S> {
    pub(crate) fn new(inner: S, service: Arc<str>) -> Self {
        Self { inner, service }
    }
}

impl<S> fmt::Debug for CatchPanic<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanic")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for CatchPanic<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.poll_ready(cx))) {
            Ok(ready) => ready.map_err(Into::into),
            Err(payload) => Poll::Ready(Err(panicked(&self.service, &*payload))),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => CatchPanicFuture::Running {
                future,
                service: Arc::clone(&self.service),
            },
            Err(payload) => CatchPanicFuture::Panicked {
                error: Some(panicked(&self.service, &*payload)),
            },
        }
    }
}

fn panicked(service: &Arc<str>, payload: &(dyn Any + Send)) -> BoxError {
    let panic = Panic::new(Arc::clone(service), payload);
    tracing::error!(
        target: "switchyard_router",
        service = %service,
        message = panic.message(),
        "handler panicked"
    );
    Box::new(panic)
}

pin_project! {
    /// The response future of [`CatchPanic`].
    #[project = CatchPanicProj]
    pub(crate) enum CatchPanicFuture<F> {
        Running { #[pin] future: F, service: Arc<str> },
        Panicked { error: Option<BoxError> },
    }
}

impl<F, T, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CatchPanicProj::Running { future, service } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(result)) => Poll::Ready(result.map_err(Into::into)),
                    Err(payload) => Poll::Ready(Err(panicked(service, &*payload))),
                }
            }
            CatchPanicProj::Panicked { error } => Poll::Ready(Err(error
                .take()
                .expect("CatchPanicFuture polled after completion"))),
        }
    }
}
