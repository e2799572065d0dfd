//! Code as a monolith, deploy as microservices, switch between the two by one SQL row.
//!
//! A [`Router`] dispatches calls by service name. Each service can be registered in-process
//! ([`Router::register_local`], any tower `Service`), and a routes table — a SQLite file,
//! hot-reloaded while calls run — says per service whether calls run locally, go to a remote
//! transport (`http`, `grpc` with the `grpc` feature, or any strategy with a registered
//! [`TransportFactory`]), or are switched off (`noop`). Each route's `config` column is a
//! resilience stack (timeouts, rate limit, bulkhead, circuit breaker, retry, fallback) built around
//! it and rebuilt only when that row changes.
//!
//! # Example: one row switches a service off
//!
//! ```
//! use bytes::Bytes;
//! use switchyard_router::{Admin, Router, RouteRow, SqliteSource};
//! use tower::{BoxError, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("routes.db");
//! let source = SqliteSource::open(&path)?; // creates the file and schema if missing
//! let admin = source.admin()?;
//!
//! let router = Router::new();
//! router.register_local("billing", service_fn(|payload: Bytes| async move {
//!     Ok::<_, BoxError>(Bytes::from(format!("billed:{}", String::from_utf8_lossy(&payload))))
//! }));
//!
//! // billing runs locally.
//! admin.upsert(RouteRow::new("billing", "local")).await?;
//! router.reload_from(&source).await?;
//! let resp = router.dispatch("billing", Bytes::from("$100")).await?;
//! assert_eq!(resp, "billed:$100");
//!
//! // Switch it off: no restart, the next call sees the new row.
//! admin.set_strategy("billing", "noop").await?;
//! router.reload_from(&source).await?;
//! let resp = router.dispatch("billing", Bytes::from("$200")).await?;
//! assert!(resp.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! In a server, [`Router::watch`] replaces the explicit reloads: it polls the file's
//! `PRAGMA data_version` (every 200 ms by default) and reloads when any connection — this
//! process's [`Admin`], another process, the `sqlite3` shell — commits a change.
//!
//! # Errors
//!
//! Calls fail with boxed typed errors, each a core [`Rejection`](switchyard_core::Rejection) (so
//! [`switchyard_core::rejection::http_response`] maps them): [`ServiceNotFound`] (404),
//! [`NoFactory`], [`FactoryFailed`] (an endpoint the SSRF guard refuses is one, caused by
//! [`SsrfBlocked`]) and [`InvalidConfig`] for a broken route (503; the other routes keep serving),
//! [`SsrfBlocked`] when a host name resolves to an internal address at connect time (503), the
//! breaker's [`BreakerOpen`](switchyard_breaker::BreakerOpen) (503 with `Retry-After`), the stack's
//! [`TimedOut`](switchyard_resilience::TimedOut) (504), [`UpstreamFailed`] (502) and [`Panic`]
//! (500).
//!
//! # Observability
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `switchyard_router_calls_total` | counter | `service`, `strategy`, `outcome` (`ok` or a rejection kind, or `error`) |
//! | `switchyard_router_call_duration_seconds` | histogram | `service`, `strategy` |
//! | `switchyard_router_not_found_total` | counter | — (unknown names are not labels) |
//! | `switchyard_router_reloads_total` | counter | — |
//! | `switchyard_router_reload_errors_total` | counter | — |
//! | `switchyard_router_reload_duration_seconds` | histogram | — |
//! | `switchyard_router_routes`, `switchyard_router_routes_broken` | gauge | — |
//!
//! Each reload logs an INFO event (target `switchyard_router`) with `added`, `changed`,
//! `unchanged`, `removed`, `broken` and `duration_us`; each broken route a WARN with `service`
//! and `error`; each caught panic an ERROR.

mod build;
mod config;
mod diff;
mod error;
mod files;
#[cfg(feature = "grpc")]
mod grpc;
mod http;
mod layer;
mod observe;
mod reload;
mod route;
mod router;
mod source;
pub mod sqlite;
mod status;
mod table;
mod transport;

pub use config::RouteConfig;
pub use error::{
    FactoryFailed, InvalidConfig, NoFactory, Panic, ServiceNotFound, SourceError, UpstreamFailed,
};
#[cfg(feature = "grpc")]
pub use grpc::{GrpcTransport, RawCodec};
pub use http::HttpTransport;
pub use layer::{RouteLayer, Routed};
pub use reload::{RETRY_INTERVAL, WatchHandle};
pub use route::{Route, RouteFuture};
pub use router::{LOCAL, NOOP, Router};
pub use source::{RouteRow, RouteSource};
pub use sqlite::{Admin, AdminError, SqliteSource};
pub use status::{ReloadReport, RouterStatus, ServiceInfo};
pub use switchyard_client::{
    AuthConfig, CredentialError, Resolver, SsrfBlocked, TlsConfig, TlsFailed, TlsFailure,
    internal_reason,
};
pub use transport::{RouteService, RouteSpec, TransportFactory};

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
