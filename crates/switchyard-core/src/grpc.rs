//! tonic in one line: any switchyard layer, or a whole stack, in `Server::builder().layer(..)`
//! (every service of the server) or around one generated service, with every failure
//! answered as a gRPC status by core's mapping.
//!
//! [`GrpcLayer`] (or [`ForTonic::for_tonic`] on any layer) is [`crate::axum::AxumLayer`]'s
//! twin for tonic: bodies become `tonic::body::Body` both ways, and a failure becomes a
//! trailers-only response ([`status_of`]): a [`Rejection`] with its kind's code
//! (`RESOURCE_EXHAUSTED` rate limited, `UNAVAILABLE` breaker open or bulkhead full,
//! `DEADLINE_EXCEEDED` timed out) and a `retry-after` metadata entry (whole seconds) when it
//! knows when to retry; a `tonic::Status` as it is; any other error `INTERNAL` with a message
//! that shows nothing of it (logged instead).
//!
//! A stack on a server judges whole calls: for a streaming method it acts when the call
//! opens. Build such stacks with the per-pattern rules (switchyard-resilience's
//! `Pattern::Duplex`: no retry, no bulkhead slot held, no body buffered), or they would buffer
//! a stream a client is still sending.

use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tower::{BoxError, Layer, Service};

use crate::adapt::{Adapt, Adapted, AdaptedFuture, Framework, FrameworkBody};
use crate::rejection::{Rejection, RejectionKind, find_rejection, retry_after_secs};

/// The status a failed call answers: see the [module](self).
pub fn status_of(error: &(dyn Error + 'static)) -> tonic::Status {
    if let Some(status) = known_status(error) {
        return status;
    }
    tracing::error!(target: "switchyard", %error, "call failed");
    tonic::Status::internal("internal error; see the server log")
}

/// The status an error already stands for: a `tonic::Status` in its chain, or a rejection's.
fn known_status(error: &(dyn Error + 'static)) -> Option<tonic::Status> {
    crate::find_cause::<tonic::Status>(error)
        .cloned()
        .or_else(|| find_rejection(error).map(rejection_status))
}

/// A rejection's status: its kind's code, its message (a panic's hidden), and `retry-after`
/// metadata when it knows when to retry.
pub fn rejection_status(rejection: &dyn Rejection) -> tonic::Status {
    let mut status = if rejection.kind() == RejectionKind::Panic {
        tracing::error!(target: "switchyard", error = %rejection, "a handler panicked");
        tonic::Status::internal("the handler panicked; see the server log")
    } else {
        rejection.to_status()
    };
    if let Some(secs) = retry_after_secs(rejection) {
        status
            .metadata_mut()
            .insert("retry-after", MetadataValue::from(secs));
    }
    status
}

/// tonic, as an [`adapt`](crate::adapt) framework: its body, failures as trailers-only
/// responses with [`status_of`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tonic;

impl Framework for Tonic {
    type Body = tonic::body::Body;

    fn body<B>(body: B) -> tonic::body::Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        tonic::body::Body::new(body)
    }

    fn failure(&self, error: BoxError) -> http::Response<tonic::body::Body> {
        status_of(&*error).into_http()
    }
}

/// A layer made to fit tonic: see the [module](self).
pub type GrpcLayer<L> = Adapt<L, Tonic>;
/// The service a [`GrpcLayer`] builds: tonic's body in and out, never an error.
pub type GrpcService<T> = Adapted<T, Tonic>;
/// The future of a [`GrpcService`].
pub type GrpcFuture<F> = AdaptedFuture<F, Tonic>;
/// The service below a [`GrpcLayer`]'s layer: tonic's own, given a `tonic::body::Body`.
pub type ToTonicBody<S> = FrameworkBody<S, Tonic>;

impl<L> GrpcLayer<L> {
    /// `layer`, with failures as gRPC statuses.
    pub fn new(layer: L) -> Self {
        Adapt::with(layer, Tonic)
    }

    /// `service` (a generated server, `LedgerServer::new(..)`) behind this layer, under its
    /// own gRPC name, so that `Server::builder().add_service(..)` takes it: a stack for one
    /// service of a server rather than all of them.
    pub fn around<S>(&self, service: S) -> Named<<Self as Layer<S>>::Service, S>
    where
        Self: Layer<S>,
        S: NamedService,
    {
        Named {
            inner: self.layer(service),
            name: PhantomData,
        }
    }
}

/// A layered service under the gRPC name of the service `N` it wraps: see
/// [`GrpcLayer::around`].
pub struct Named<S, N> {
    inner: S,
    name: PhantomData<fn() -> N>,
}

impl<S: Clone, N> Clone for Named<S, N> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            name: PhantomData,
        }
    }
}

impl<S: fmt::Debug, N> fmt::Debug for Named<S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named").field("inner", &self.inner).finish()
    }
}

impl<S, N: NamedService> NamedService for Named<S, N> {
    const NAME: &'static str = N::NAME;
}

impl<S: Service<R>, N, R> Service<R> for Named<S, N> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}

/// The status a client-side stack's failure gives a generated client: a rejection's (as
/// [`rejection_status`]), a `tonic::Status` as it is, and any other error (the channel's
/// transport errors) as tonic itself maps it (`UNAVAILABLE` for a refused connection).
pub fn client_status(error: BoxError) -> tonic::Status {
    known_status(&*error).unwrap_or_else(|| tonic::Status::from_error(error))
}

/// tonic's client side, as an [`adapt`](crate::adapt) framework: failures as the
/// trailers-only responses a generated client reads back as [`client_status`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TonicClient;

impl Framework for TonicClient {
    type Body = tonic::body::Body;

    fn body<B>(body: B) -> tonic::body::Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Tonic::body(body)
    }

    fn failure(&self, error: BoxError) -> http::Response<tonic::body::Body> {
        client_status(error).into_http()
    }
}

/// A layer made to fit around a `tonic::transport::Channel`, for generated clients:
/// `MyClient::new(ServiceBuilder::new().layer(stack.for_tonic_client()).service(channel))`.
pub type GrpcClientLayer<L> = Adapt<L, TonicClient>;

impl<L> GrpcClientLayer<L> {
    /// `layer`, around a channel.
    pub fn new(layer: L) -> Self {
        Adapt::with(layer, TonicClient)
    }
}

/// `.for_tonic()` on any layer: the layer as a [`GrpcLayer`]; `.for_tonic_client()`: as a
/// [`GrpcClientLayer`].
pub trait ForTonic: Sized {
    /// This layer, ready for `Server::builder().layer(..)` or a `ServiceBuilder` around a
    /// generated service.
    fn for_tonic(self) -> GrpcLayer<Self> {
        GrpcLayer::new(self)
    }

    /// This layer, ready to wrap a `tonic::transport::Channel` for generated clients.
    fn for_tonic_client(self) -> GrpcClientLayer<Self> {
        GrpcClientLayer::new(self)
    }
}

impl<L> ForTonic for L {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::tests::Limited;

    #[test]
    fn a_rejection_is_its_code_with_retry_after_metadata() {
        crate::rejection::register::<Limited>();
        let error: BoxError = Box::new(Limited);
        let status = status_of(&*error);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "rate limited");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
        let response = Tonic.failure(error);
        assert_eq!(response.headers()["grpc-status"], "8");
    }

    #[test]
    fn a_status_passes_and_other_errors_show_nothing() {
        let status: BoxError = Box::new(tonic::Status::invalid_argument("no such account"));
        assert_eq!(status_of(&*status).code(), tonic::Code::InvalidArgument);
        let secret: BoxError = "db password hunter2 rejected".into();
        let status = status_of(&*secret);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
