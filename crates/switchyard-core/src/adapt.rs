//! The shape every framework adapter shares: a layer wrapped so that its service takes and
//! answers the framework's body type and never fails, its failures rendered as the framework's
//! error responses. [`crate::axum`] and [`crate::grpc`] are its two frameworks.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};

/// A server framework as an adapter sees it: its body type, and how it answers a failure.
pub trait Framework: Clone {
    /// The framework's request and response body.
    type Body: http_body::Body<Data = Bytes> + Send + 'static;

    /// Any body as the framework's.
    fn body<B>(body: B) -> Self::Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>;

    /// The response a failed call gets.
    fn failure(&self, error: BoxError) -> Response<Self::Body>;
}

/// A layer made to fit framework `F`: see [`crate::axum::AxumLayer`] and
/// [`crate::grpc::GrpcLayer`].
#[derive(Debug, Clone)]
pub struct Adapt<L, F> {
    layer: L,
    framework: F,
}

impl<L, F> Adapt<L, F> {
    pub(crate) fn with(layer: L, framework: F) -> Self {
        Self { layer, framework }
    }

    #[cfg(feature = "axum")]
    pub(crate) fn framework_mut(&mut self) -> &mut F {
        &mut self.framework
    }

    /// The wrapped layer.
    pub fn get_ref(&self) -> &L {
        &self.layer
    }

    /// The wrapped layer, unwrapped.
    pub fn into_inner(self) -> L {
        self.layer
    }
}

impl<L, F, S> Layer<S> for Adapt<L, F>
where
    L: Layer<FrameworkBody<S, F>>,
    F: Framework,
{
    type Service = Adapted<L::Service, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Adapted {
            inner: self.layer.layer(FrameworkBody {
                inner,
                framework: PhantomData,
            }),
            framework: self.framework.clone(),
            not_ready: None,
        }
    }
}

/// The service below the wrapped layer: the framework's own (an axum `Route`, tonic's
/// routes), given whatever body the layer hands down as the framework's, its error as a
/// `BoxError`.
#[derive(Debug, Clone)]
pub struct FrameworkBody<S, F> {
    inner: S,
    framework: PhantomData<fn() -> F>,
}

impl<S, F, B> Service<Request<B>> for FrameworkBody<S, F>
where
    S: Service<Request<F::Body>>,
    S::Error: Into<BoxError>,
    F: Framework,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ErrInto<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ErrInto {
            inner: self.inner.call(request.map(F::body)),
        }
    }
}

pin_project! {
    /// The future of [`FrameworkBody`]: the inner one, its error boxed.
    pub struct ErrInto<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut, T, E> Future for ErrInto<Fut>
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

/// The wrapped layer's service as the framework wants it: its body in and out, never an
/// error.
pub struct Adapted<T, F> {
    inner: T,
    framework: F,
    /// A failure of `poll_ready`, answered by the next call.
    not_ready: Option<BoxError>,
}

impl<T: Clone, F: Clone> Clone for Adapted<T, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            framework: self.framework.clone(),
            not_ready: None,
        }
    }
}

impl<T: fmt::Debug, F: fmt::Debug> fmt::Debug for Adapted<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapted")
            .field("inner", &self.inner)
            .field("framework", &self.framework)
            .finish_non_exhaustive()
    }
}

impl<T, F, RB> Service<Request<F::Body>> for Adapted<T, F>
where
    T: Service<Request<F::Body>, Response = Response<RB>>,
    T::Error: Into<BoxError>,
    F: Framework,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<F::Body>;
    type Error = Infallible;
    type Future = AdaptedFuture<T::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none()
            && let Err(error) = ready!(self.inner.poll_ready(cx))
        {
            self.not_ready = Some(error.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<F::Body>) -> Self::Future {
        let state = match self.not_ready.take() {
            Some(error) => State::Failed { error: Some(error) },
            None => State::Called {
                future: self.inner.call(request),
            },
        };
        AdaptedFuture {
            state,
            framework: self.framework.clone(),
        }
    }
}

pin_project! {
    /// The future of [`Adapted`].
    pub struct AdaptedFuture<Fut, F> {
        #[pin]
        state: State<Fut>,
        framework: F,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        Called { #[pin] future: Fut },
        Failed { error: Option<BoxError> },
    }
}

impl<Fut, F, RB, E> Future for AdaptedFuture<Fut, F>
where
    Fut: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    F: Framework,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<F::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProj::Called { future } => match ready!(future.poll(cx)) {
                Ok(response) => response.map(F::body),
                Err(error) => this.framework.failure(error.into()),
            },
            StateProj::Failed { error } => {
                let error = error.take().expect("polled after completion");
                this.framework.failure(error)
            }
        };
        Poll::Ready(Ok(response))
    }
}
