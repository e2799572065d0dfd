//! switchyard: resilience and routing middleware for tower.
//!
//! Each concern is its own tower `Layer` crate, usable alone or stacked with
//! `tower::ServiceBuilder` in axum, tonic or hyper servers and clients. This facade re-exports each
//! crate behind a feature of the same name (all on by default but `router`) and gathers the names
//! most programs need in [`prelude`].
//!
//! | module | crate | what |
//! | --- | --- | --- |
//! | [`core`] | switchyard-core | outcome classification, rejection kinds and their HTTP/gRPC mapping, config helpers |
//! | `breaker` | switchyard-breaker | circuit breaker layer, handle, events (feature `breaker`) |
//! | `bulkhead` | switchyard-bulkhead | bulkhead layer with four backpressure policies, admission controller (feature `bulkhead`) |
//! | `ratelimit` | switchyard-ratelimit | governor-based rate limits, global and keyed, reject or wait (feature `ratelimit`) |
//! | `retry` | switchyard-retry | tower `Retry` policy: backoff, jitter, budget, replayable HTTP bodies (feature `retry`) |
//! | `resilience` | switchyard-resilience | `ResilienceConfig` and the stack it builds, timeouts, fallback, registry (feature `resilience`) |
//! | `balance` | switchyard-balance | selector-based load balancer: seven strategies, runtime endpoints, outlier ejection (feature `balance`) |
//! | `provider` | switchyard-provider | provider registry and manager: factories from config, opt-in initialize/close, selection, the four interaction patterns (feature `provider`) |
//! | `stream` | switchyard-stream | ordered client-stream gate for tonic: FIFO or keyed-FIFO ordering, backpressure, shutdown, per-message retry (feature `stream`, off by default) |
//! | `router` | switchyard-router | name-dispatch router over a hot-reloaded SQLite routes table: local, remote (`http`, custom), `noop` (feature `router`, off by default) |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use switchyard::prelude::*;
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::new(
//!     "payments",
//!     CircuitBreakerConfig::new(Trip::consecutive_failures(2))
//!         .with_wait_in_open(Duration::from_millis(100)),
//! )?;
//! let mut service = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|_: ()| async { Err::<(), BoxError>("service down".into()) }));
//! for _ in 0..2 {
//!     let _ = service.ready().await?.call(()).await;
//! }
//! let err = service.ready().await?.call(()).await.unwrap_err();
//! assert_eq!(err.to_string(), "circuit open: payments");
//! let rejection = find_rejection(&*err).expect("a switchyard rejection");
//! assert_eq!(rejection.kind().http_status(), 503);
//! # Ok(())
//! # }
//! ```

pub use switchyard_core as core;

#[cfg(feature = "breaker")]
pub use switchyard_breaker as breaker;

#[cfg(feature = "bulkhead")]
pub use switchyard_bulkhead as bulkhead;

#[cfg(feature = "ratelimit")]
pub use switchyard_ratelimit as ratelimit;

#[cfg(feature = "retry")]
pub use switchyard_retry as retry;

#[cfg(feature = "resilience")]
pub use switchyard_resilience as resilience;

#[cfg(feature = "balance")]
pub use switchyard_balance as balance;

#[cfg(feature = "provider")]
pub use switchyard_provider as provider;

#[cfg(feature = "router")]
pub use switchyard_router as router;

#[cfg(feature = "stream")]
pub use switchyard_stream as stream;

#[cfg(feature = "plugin")]
pub use switchyard_plugin as plugin;

/// axum in one line: a whole stack ([`ResilienceLayer`](axum::ResilienceLayer)`::http`) or any
/// single layer (`.for_axum()`) straight into `Router::route_layer`, `MethodRouter::layer` or
/// `Router::layer`, with every rejection rendered by core's mapping; `IntoResponse` for the
/// rejection types and [`Rejected`](axum::Rejected) for `?` in handlers.
///
/// Retries repeat only idempotent methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`)
/// or requests marked [`Idempotent`](crate::retry::http::Idempotent): the `POST /pay` below gets
/// the timeout, and a retry only once a request is marked (an idempotency key, say).
///
/// ```
/// use axum::{Router, routing::post};
/// use switchyard::axum::ResilienceLayer;
/// use switchyard::prelude::ResilienceConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cfg = ResilienceConfig::from_json(r#"{"timeout":"2s","retry":{"max_attempts":3}}"#)?;
/// let app: Router = Router::new()
///     .route("/pay", post(|body: String| async move { format!("paid {body}") }))
///     .route_layer(ResilienceLayer::http("pay", &cfg)?);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
///
/// A single layer, with `.for_axum()`:
///
/// ```
/// use axum::{Router, routing::get};
/// use switchyard::axum::{ErrorFormat, ForAxum};
/// use switchyard::prelude::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = RateLimitLayer::new("search", &RateLimitConfig::new("100/s".parse()?))?;
/// let app: Router = Router::new()
///     .route("/search", get(|| async { "found" }))
///     .route_layer(limit.for_axum().format(ErrorFormat::Plain));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "axum")]
pub mod axum {
    pub use switchyard_core::axum::{
        Axum, AxumFuture, AxumLayer, AxumService, ErrorFormat, ForAxum, Rejected, ToAxumBody,
        error_response, rejection_response,
    };
    #[cfg(feature = "resilience")]
    pub use switchyard_resilience::axum::{ResilienceLayer, layers};
}

/// tonic in one line: any layer or a whole stack (`ResilienceLayer::grpc`) with
/// `.for_tonic()` in `Server::builder().layer(..)`, every rejection answered as a gRPC status
/// with `retry-after` metadata where known (core's mapping), or `.for_tonic().around(service)`
/// for one service of a server; with `.for_tonic_client()` around a `Channel` for generated
/// clients, which then read each refusal as its status.
///
/// ```no_run
/// use switchyard::grpc::ForTonic;
/// use switchyard::prelude::*;
///
/// # fn main() -> Result<(), BoxError> {
/// // gRPC calls are all POST: list it for the retry to repeat unary calls.
/// let cfg = ResilienceConfig::from_json(r#"{"timeout": "2s",
///     "retry": {"max_attempts": 3, "methods": ["POST"]}}"#)?;
/// let stack = ResilienceLayer::grpc("ledger", &cfg)?;
/// // Every service of a server (`.around(MyServer::new(..))` in `add_service` for one):
/// let server = tonic::transport::Server::builder().layer(stack.clone().for_tonic());
/// // Around a channel, for `MyClient::new(channel)`:
/// let channel = tower::ServiceBuilder::new()
///     .layer(stack.for_tonic_client())
///     .service(tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy());
/// # let _ = (server, channel);
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "grpc")]
pub mod grpc {
    pub use switchyard_core::grpc::{
        ForTonic, GrpcClientLayer, GrpcFuture, GrpcLayer, GrpcService, Named, ToTonicBody, Tonic,
        TonicClient, client_status, rejection_status, status_of,
    };
}

/// The names most programs need, for `use switchyard::prelude::*`.
pub mod prelude {
    pub use switchyard_core::{
        BoxError, Classify, ConfigError, ErrorsAsFailures, HttpClassifier, IgnoreRejections,
        Outcome, Rejection, RejectionKind, find_rejection,
    };

    #[cfg(feature = "breaker")]
    pub use switchyard_breaker::{
        BreakerHandle, BreakerMode, BreakerOpen, BreakerState, CircuitBreakerConfig,
        CircuitBreakerLayer, FailureWindow, KeyedCircuitBreakerLayer, Trip,
    };

    #[cfg(feature = "bulkhead")]
    pub use switchyard_bulkhead::{
        AdaptiveConfig, AdmissionController, BulkheadConfig, BulkheadFull, BulkheadLayer,
        BulkheadPolicy, KeyedBulkheadLayer,
    };

    #[cfg(feature = "ratelimit")]
    pub use switchyard_ratelimit::{
        KeyedRateLimitLayer, RateLimitConfig, RateLimitLayer, RateLimitMode, RateLimited,
    };

    #[cfg(feature = "retry")]
    pub use switchyard_retry::{
        BackoffConfig, BudgetConfig, Jitter, RetryConfig, RetryLayer, http::HttpRetryLayer,
    };

    #[cfg(feature = "resilience")]
    pub use switchyard_resilience::{
        FallbackLayer, ResilienceConfig, ResilienceLayer, StackRegistry, TimedOut, TimeoutLayer,
    };

    #[cfg(feature = "balance")]
    pub use switchyard_balance::{Balance, EndpointConfig, Health, OutlierConfig, Strategy};

    #[cfg(feature = "provider")]
    pub use switchyard_provider::{Close, Initialize, Manager, Provider, ProviderError, Selection};

    #[cfg(feature = "router")]
    pub use switchyard_router::{
        Admin, HttpTransport, RouteLayer, RouteRow, RouteSource, Router, SqliteSource,
        TransportFactory,
    };
}

/// The workspace README's examples, compiled as doctests so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
