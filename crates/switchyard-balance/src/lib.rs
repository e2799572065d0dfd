//! A selector-based load balancer for tower.
//!
//! A [`Balance`] is a `Service` over named endpoints — each a tower `Service` with a weight, a
//! priority and an enabled flag — that sends each call to one endpoint its [`Selector`] picks
//! among the *eligible* ones (enabled, not `Unhealthy`/`Offline`, not ejected). Strategies, by
//! their config names: `round-robin`, `random`, `least-connections`, `least-latency`,
//! `weighted-random`, `consistent-hash`, `priority`; or your own [`Selector`]. Endpoints come
//! and go at runtime without failing calls in flight; endpoints that keep failing are ejected
//! for a growing time, never more than a capped share of them ([`OutlierConfig`]); active health
//! checks ([`Balance::check`]) run in the background; endpoints can follow a
//! `tower::discover::Discover` stream ([`Balance::follow`]). An endpoint whose `poll_ready` is
//! pending is left out of the pick until a background task sees it ready, and the balancer's
//! own `poll_ready` waits only while no eligible endpoint is ready.
//!
//! Configs say no: [`OutlierConfig::validate`], [`HealthCheckConfig::validate`] and
//! [`EndpointConfig::validate`] name the first bad field (`outlier.max_ejection_percent`, …),
//! and [`Balance::with_outlier`], [`Balance::check`], [`Balance::add`] and [`Balance::follow`]
//! refuse a config they refuse; no value is clamped silently.
//!
//! # Example
//!
//! ```
//! use switchyard_balance::{Balance, EndpointConfig, Strategy};
//! use tower::{BoxError, Service, ServiceExt, service_fn};
//! use tower::util::BoxCloneSyncService;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! type Backend = BoxCloneSyncService<u32, String, BoxError>;
//! let backend = |name: &'static str| -> Backend {
//!     BoxCloneSyncService::new(service_fn(move |n: u32| async move {
//!         Ok::<_, BoxError>(format!("{name}:{n}"))
//!     }))
//! };
//! let mut balance = Balance::new("quotes", Strategy::RoundRobin);
//! balance.add("a", backend("a"), &EndpointConfig::default())?;
//! balance.add("b", backend("b"), &EndpointConfig::default())?;
//!
//! assert_eq!(balance.ready().await?.call(1).await?, "a:1");
//! assert_eq!(balance.ready().await?.call(2).await?, "b:2");
//!
//! balance.disable("a")?;
//! assert_eq!(balance.ready().await?.call(3).await?, "b:3");
//! assert_eq!(balance.stats()[1].total_requests, 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Observability
//!
//! `switchyard_balance_ejections_total{balancer,endpoint}`,
//! `switchyard_balance_health_changes_total{balancer,to}` and
//! `switchyard_balance_no_endpoint_total{balancer}`; a WARN event (target `switchyard_balance`)
//! per ejection and an INFO event per health change, with fields `balancer` and `endpoint`.

mod balance;
mod config;
mod discover;
mod endpoint;
mod error;
mod future;
pub mod health;
mod outlier;
mod ready;
mod selector;
mod service;
mod shared;
mod snapshot;

pub use balance::{Balance, BoxEndpoint, HealthReport, Picked};
pub use config::{FailureRate, OutlierConfig};
pub use discover::Discovery;
pub use endpoint::{EndpointConfig, EndpointStats, EndpointView, Health};
pub use error::{EndpointError, NoAvailableEndpoint};
pub use future::BalanceFuture;
pub use health::{HealthCheckConfig, HealthChecker};
pub use selector::{
    ConsistentHash, DEFAULT_RTT, Hint, LeastConnections, LeastLatency, Pick, PickContext, Priority,
    Random, Rng, RoundRobin, Selector, Strategy, WeightedRandom,
};

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
