//! The `grpc` transport: a unary gRPC call per routed call, over a tonic channel, behind the
//! same SSRF guard as `http`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use serde::Deserialize;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use switchyard_client::{AuthConfig, AuthHeaders, Guard, Resolver, TlsConfig};

use crate::http::{
    call_failed, route_connector, route_credentials, route_endpoint, transport_options,
};
use crate::transport::{RouteService, RouteSpec, TransportFactory};

/// A gRPC codec that passes messages through as bytes: the routed payload *is* the encoded
/// request message, and the answer is the encoded response message. The router stays
/// schema-free; callers (or a layer above) encode and decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The `grpc` transport factory: each routed call is one unary gRPC call whose request message
/// is the payload and whose response message is the answer, both as encoded bytes
/// ([`RawCodec`]).
///
/// The route's endpoint names the server and the method: `http://host:port/package.Service/Method`.
/// Each route gets its own lazily connected tonic [`Channel`] (HTTP/2: over TLS for `https://`,
/// cleartext for `http://`); it is dropped with the route. A non-OK status fails the call with
/// [`UpstreamFailed`](crate::UpstreamFailed), the `tonic::Status` as its source. The deadline is
/// the route's resilience `timeout`.
///
/// Route options (the config's `transport` object): `tls` and `auth`, as the `http`
/// transport's ([`TlsConfig`], [`AuthConfig`]: the credentials travel as request metadata);
/// unknown keys are refused.
///
/// The SSRF guard is the `http` transport's: IP literals are checked when the route is built,
/// names on every resolved address at connect time; [`allow_internal`](Self::allow_internal)
/// opts out. A TLS handshake that fails is a [`TlsFailed`](crate::TlsFailed) naming the route.
///
/// Building a route spawns the channel's worker task, so routes of this strategy must be built
/// inside a tokio runtime (as [`Router::reload_from`](crate::Router::reload_from) does).
#[derive(Clone, Default)]
pub struct GrpcTransport {
    guard: Guard,
}

impl fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("allow_internal", &self.guard.internal_allowed())
            .finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// The transport with the SSRF guard on and the system resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether endpoints may be internal (loopback, private...). Off by default.
    #[must_use]
    pub fn allow_internal(mut self, allow: bool) -> Self {
        self.guard = self.guard.allow_internal(allow);
        self
    }

    /// Resolves host names with `resolver` instead of the system's; the guard applies to what
    /// it returns.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.guard = self.guard.with_resolver(resolver);
        self
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcOptions {
    #[serde(default)]
    tls: TlsConfig,
    #[serde(default)]
    auth: AuthConfig,
}

impl TransportFactory<Bytes, Bytes> for GrpcTransport {
    fn build(&self, spec: &RouteSpec<'_>) -> Result<RouteService<Bytes, Bytes>, BoxError> {
        let shape = "http[s]://host:port/package.Service/Method";
        let uri = route_endpoint(&self.guard, spec, shape)?;
        let authority = uri.authority().ok_or("an endpoint with no host")?;
        let path = uri.path();
        let method_ok = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .is_some_and(|(service, method)| {
                !service.is_empty() && !method.is_empty() && !method.contains('/')
            });
        if !method_ok || uri.query().is_some() {
            return Err(format!(
                "invalid gRPC method in {uri}: expected a path /package.Service/Method"
            )
            .into());
        }
        let options: GrpcOptions = transport_options(spec.options)?;
        let path = PathAndQuery::from_str(path)?;
        // gRPC is HTTP/2: offered by ALPN over TLS, spoken directly over plain TCP.
        let (tls, auth) = route_credentials(&self.guard, &uri, &options.tls, &options.auth)?;
        let metadata = metadata_of(&auth);
        let connector = route_connector(&self.guard, &uri, &tls, &[b"h2"], None)?;
        let scheme = uri.scheme_str().unwrap_or("http");
        let channel = Endpoint::from_shared(format!("{scheme}://{authority}"))?
            .connect_with_connector_lazy(connector);
        Ok(BoxCloneSyncService::new(GrpcRoute {
            client: tonic::client::Grpc::new(channel),
            shared: Arc::new(Shared {
                path,
                metadata,
                service: spec.service.into(),
            }),
        }))
    }
}

/// The auth headers as gRPC metadata (ASCII values; names are lower case already).
fn metadata_of(auth: &AuthHeaders) -> tonic::metadata::MetadataMap {
    let mut headers = http::HeaderMap::new();
    auth.apply(&mut headers);
    tonic::metadata::MetadataMap::from_headers(headers)
}

struct Shared {
    path: PathAndQuery,
    metadata: tonic::metadata::MetadataMap,
    service: Arc<str>,
}

/// One `grpc` route's service.
#[derive(Clone)]
struct GrpcRoute {
    client: tonic::client::Grpc<Channel>,
    shared: Arc<Shared>,
}

impl Service<Bytes> for GrpcRoute {
    type Response = Bytes;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The channel is readied in the call, so a connection failure is that call's error.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, payload: Bytes) -> Self::Future {
        let mut client = self.client.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let failed = |e: BoxError| call_failed(&shared.service, e);
            client.ready().await.map_err(|e| failed(e.into()))?;
            let response = client
                .unary(
                    Request::from_parts(shared.metadata.clone(), Default::default(), payload),
                    shared.path.clone(),
                    RawCodec,
                )
                .await
                .map_err(|status| failed(Box::new(status)))?;
            Ok(response.into_inner())
        })
    }
}
