//! The balancer itself: its construction and settings, its endpoints managed at runtime, and
//! what it reports (stats, health, picks).

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use switchyard_core::sync::lock;
use switchyard_core::{ConfigError, ErrorsAsFailures};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::config::OutlierConfig;
use crate::endpoint::{EndpointConfig, EndpointStats, EndpointView, Health};
use crate::error::{EndpointError, NoAvailableEndpoint};
use crate::health::{HealthCheckConfig, HealthChecker, Reporter};
use crate::selector::{Hint, Rng, Selector, Strategy};
use crate::shared::{Shared, take_out};
use crate::snapshot::{Member, Snapshot};

/// A load balancer over named endpoints, each a tower `Service`: a `Service<Req>` that sends
/// each call to one eligible endpoint as its [`Selector`] picks.
///
/// - **Endpoints change at runtime** ([`add`](Self::add), [`remove`](Self::remove),
///   [`enable`](Self::enable), [`disable`](Self::disable), [`set_health`](Self::set_health)):
///   calls in flight on a removed or disabled endpoint finish on it.
/// - **Eligible** endpoints are enabled, not `Unhealthy`/`Offline`, and not ejected. A snapshot
///   of them (and the strategy's precomputed pick) is rebuilt only when that set changes, so a
///   call costs a snapshot load and one O(1) or O(log n) pick. With none eligible, the call
///   fails with [`NoAvailableEndpoint`].
/// - **Passive outlier ejection** ([`OutlierConfig`]) with a cap on the share ejected.
/// - **Hints** per call ([`with_hint`](Self::with_hint)): a key for `consistent-hash`,
///   preferred endpoints.
///
/// - **Readiness** is tower's: an endpoint whose `poll_ready` answered `Pending` (found when it
///   is added or by a call sent to it) is left out of the pick while another eligible endpoint
///   is ready, and a background task drives it until it is ready again — woken by the endpoint,
///   not by calls or timers. The balancer's `poll_ready` is ready while an eligible endpoint is
///   ready (or none is eligible: the call then fails with [`NoAvailableEndpoint`]); each call
///   readies its chosen endpoint's clone, so one busy endpoint never stalls the others.
///
/// Clones share everything.
pub struct Balance<Req, Res, C = ErrorsAsFailures> {
    pub(crate) shared: Arc<Shared<BoxEndpoint<Req, Res>, Req>>,
    pub(crate) classifier: C,
    /// While `poll_ready` waits for an endpoint to become ready (this clone's own wait).
    pub(crate) waiting: Option<Pin<Box<OwnedNotified>>>,
    /// While `poll_ready` waits: the return of the first ejected endpoint.
    pub(crate) until: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// An endpoint's service as a balancer holds it: any service, boxed once when added. Erasing
/// the type keeps `Service` bounds on the error type off the balancer itself (such bounds make
/// an `async` block awaiting it fail to prove `Send`: rust-lang/rust#110338).
pub type BoxEndpoint<Req, Res> = BoxCloneSyncService<Req, Res, BoxError>;

/// Boxes an endpoint's service, as the balancer holds it.
pub(crate) fn boxed<S, Req, Res>(service: S) -> BoxEndpoint<Req, Res>
where
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

// === impl Balance ===

impl<Req, Res, C: Clone> Clone for Balance<Req, Res, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            waiting: None,
            until: None,
        }
    }
}

impl<Req, Res, C> fmt::Debug for Balance<Req, Res, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("name", &self.shared.name)
            .field("selector", &self.shared.selector)
            .field("eligible", &self.shared.snapshot.load().views.len())
            .finish_non_exhaustive()
    }
}

impl<Req, Res> Balance<Req, Res> {
    /// An empty balancer named `name` (in errors, metrics and events) using `strategy`.
    pub fn new(name: impl Into<Arc<str>>, strategy: Strategy) -> Self {
        Self::with_selector(name, strategy.selector())
    }

    /// An empty balancer using a selector of your own.
    pub fn with_selector(name: impl Into<Arc<str>>, selector: Arc<dyn Selector>) -> Self {
        switchyard_core::rejection::register::<NoAvailableEndpoint>();
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                selector,
                members: Mutex::new(Vec::new()),
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                // Each balancer draws its own sequence (replicas must not pick in lockstep);
                // `with_seed` fixes it for tests.
                rng: Rng::seeded({
                    use std::hash::{BuildHasher, Hasher};
                    std::collections::hash_map::RandomState::new()
                        .build_hasher()
                        .finish()
                }),
                epoch: Instant::now(),
                outlier: None,
                hint: None,
                ready: Arc::new(Notify::new()),
            }),
            classifier: ErrorsAsFailures,
            waiting: None,
            until: None,
        }
    }
}

impl<Req, Res, C> Balance<Req, Res, C> {
    fn configure(mut self, f: impl FnOnce(&mut Shared<BoxEndpoint<Req, Res>, Req>)) -> Self {
        let shared = Arc::get_mut(&mut self.shared)
            .expect("configure the balancer before cloning it or adding endpoints");
        f(shared);
        self
    }

    /// Ejects endpoints that keep failing, as `outlier` says.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `outlier` is invalid ([`OutlierConfig::validate`]).
    ///
    /// # Panics
    ///
    /// If the balancer was already cloned.
    pub fn with_outlier(self, outlier: OutlierConfig) -> Result<Self, ConfigError> {
        outlier.validate()?;
        Ok(self.configure(|s| s.outlier = Some(outlier)))
    }

    /// Seeds the random source (`random`, `weighted-random`, the two choices of
    /// `least-connections` and `least-latency`), for reproducible tests.
    ///
    /// # Panics
    ///
    /// If the balancer was already cloned.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        self.configure(|s| s.rng = Rng::seeded(seed))
    }

    /// Reads each call's [`Hint`] with `hint` (for example from an `http::Request`'s
    /// extensions).
    ///
    /// # Panics
    ///
    /// If the balancer was already cloned.
    #[must_use]
    pub fn with_hint(self, hint: impl Fn(&Req) -> Option<Hint> + Send + Sync + 'static) -> Self {
        self.configure(|s| s.hint = Some(Arc::new(hint)))
    }

    /// Classifies responses with `classifier` (for outlier detection and the success counts)
    /// instead of counting every `Err` as a failure.
    pub fn with_classifier<C2>(self, classifier: C2) -> Balance<Req, Res, C2> {
        Balance {
            shared: self.shared,
            classifier,
            waiting: None,
            until: None,
        }
    }

    /// The balancer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Adds an endpoint.
    ///
    /// # Errors
    ///
    /// [`EndpointError::Duplicate`] if the name is taken, [`EndpointError::InvalidConfig`] if
    /// `config` is invalid ([`EndpointConfig::validate`]).
    pub fn add<S>(
        &self,
        name: impl Into<Arc<str>>,
        service: S,
        config: &EndpointConfig,
    ) -> Result<(), EndpointError>
    where
        S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
        Req: 'static,
        Res: 'static,
    {
        config.validate().map_err(EndpointError::InvalidConfig)?;
        let service = boxed(service);
        let name = name.into();
        let mut members = lock(&self.shared.members);
        if members.iter().any(|m| *m.view.name() == *name) {
            return Err(EndpointError::Duplicate(name.to_string()));
        }
        let view = Arc::new(EndpointView::new(name, config));
        members.push(Member {
            view: Arc::clone(&view),
            service,
        });
        self.shared.rebuild(&members);
        drop(members);
        // Readiness is driven from the start: an endpoint still connecting is not picked.
        let _ = self.shared.probe(&view);
        Ok(())
    }

    /// Removes an endpoint; its calls in flight finish.
    ///
    /// # Errors
    ///
    /// [`EndpointError::NotFound`].
    pub fn remove(&self, name: &str) -> Result<(), EndpointError> {
        let mut members = lock(&self.shared.members);
        let before = members.len();
        take_out(&mut members, name);
        if members.len() == before {
            return Err(EndpointError::NotFound(name.to_owned()));
        }
        self.shared.rebuild(&members);
        Ok(())
    }

    fn update(
        &self,
        name: &str,
        f: impl FnOnce(&EndpointView) -> bool,
    ) -> Result<(), EndpointError> {
        let members = lock(&self.shared.members);
        let member = members
            .iter()
            .find(|m| m.view.name() == name)
            .ok_or_else(|| EndpointError::NotFound(name.to_owned()))?;
        if f(&member.view) {
            self.shared.rebuild(&members);
        }
        Ok(())
    }

    /// Lets an endpoint be picked again.
    ///
    /// # Errors
    ///
    /// [`EndpointError::NotFound`].
    pub fn enable(&self, name: &str) -> Result<(), EndpointError> {
        self.update(name, |v| !v.enabled.swap(true, Ordering::AcqRel))
    }

    /// Stops picking an endpoint; its calls in flight finish.
    ///
    /// # Errors
    ///
    /// [`EndpointError::NotFound`].
    pub fn disable(&self, name: &str) -> Result<(), EndpointError> {
        self.update(name, |v| v.enabled.swap(false, Ordering::AcqRel))
    }

    /// Sets an endpoint's health by hand. `Unhealthy` and `Offline` endpoints are not
    /// picked. `Offline` set here is an operator's decision and sticks: a running health
    /// checker does not bring the endpoint back (its results are ignored) until
    /// `set_health` sets another state.
    ///
    /// # Errors
    ///
    /// [`EndpointError::NotFound`].
    pub fn set_health(&self, name: &str, health: Health) -> Result<(), EndpointError> {
        let members = lock(&self.shared.members);
        let member = members
            .iter()
            .find(|m| m.view.name() == name)
            .ok_or_else(|| EndpointError::NotFound(name.to_owned()))?;
        member
            .view
            .held_offline
            .store(health == Health::Offline, Ordering::Release);
        self.shared.apply_health(&members, &member.view, health);
        Ok(())
    }

    /// The overall health of the endpoints, by the worst-case rule
    /// ([`overall`](crate::health::overall)).
    pub fn overall_health(&self) -> Health {
        crate::health::overall(lock(&self.shared.members).iter().map(|m| m.view.health()))
    }

    /// What a health monitor shows: every endpoint's health and the overall one.
    pub fn health_report(&self) -> HealthReport {
        let endpoints: Vec<(String, Health)> = lock(&self.shared.members)
            .iter()
            .map(|m| (m.view.name().to_owned(), m.view.health()))
            .collect();
        HealthReport {
            overall: crate::health::overall(endpoints.iter().map(|(_, h)| *h)),
            endpoints,
        }
    }

    /// Starts an active health check of endpoint `name`: `check` is called every
    /// `config.interval`; a call that fails or outlasts `config.timeout` is a failed check, one
    /// that answers a [`Health`] passes it on. `failure_threshold` failures in a row make the
    /// endpoint `Unhealthy` (not picked); `success_threshold` passes in a row bring it back.
    /// The checks run in the background — not only when calls arrive — until the returned
    /// handle is dropped or the endpoint removed.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`EndpointError::NotFound`], or [`EndpointError::InvalidConfig`] if `config` is
    /// invalid ([`HealthCheckConfig::validate`]).
    pub fn check<K>(
        &self,
        name: &str,
        check: K,
        config: &HealthCheckConfig,
    ) -> Result<HealthChecker, EndpointError>
    where
        K: Service<(), Response = Health> + Send + 'static,
        K::Error: Into<BoxError>,
        K::Future: Send,
        Req: 'static,
        Res: 'static,
    {
        config.validate().map_err(EndpointError::InvalidConfig)?;
        let view = lock(&self.shared.members)
            .iter()
            .find(|m| m.view.name() == name)
            .map(|m| Arc::clone(&m.view))
            .ok_or_else(|| EndpointError::NotFound(name.to_owned()))?;
        Ok(crate::health::spawn(
            name.into(),
            Arc::clone(&self.shared.name),
            check,
            config.clone(),
            Arc::new(Reporter::new(Arc::clone(&self.shared), view)),
        ))
    }

    /// A snapshot of every endpoint, in the order they were added.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let now = self.shared.now();
        lock(&self.shared.members)
            .iter()
            .map(|m| m.view.stats(now))
            .collect()
    }

    /// The names of the endpoints a call may be sent to now.
    pub fn eligible(&self) -> Vec<String> {
        self.shared
            .current_at(self.shared.now())
            .views
            .iter()
            .map(|v| v.name().to_owned())
            .collect()
    }

    /// Picks an endpoint as a call would — by the strategy, among the eligible endpoints
    /// (the ready ones while any is ready), `hint`'s preferred endpoints first — without
    /// calling it: for callers that keep the chosen service (a provider manager's `get`).
    /// Calls made on the returned service bypass the balancer: its stats and outlier
    /// detection do not see them.
    ///
    /// # Errors
    ///
    /// [`NoAvailableEndpoint`] when none is eligible.
    pub fn pick(&self, hint: Option<&Hint>) -> Result<Picked<Req, Res>, NoAvailableEndpoint> {
        let now = self.shared.now();
        self.shared
            .choose(now, hint)
            .map(|chosen| Picked {
                name: chosen.view.name().to_owned(),
                service: chosen.service,
            })
            .ok_or_else(|| self.shared.none_available())
    }
}

// === impl Picked ===

/// An endpoint [`Balance::pick`] chose: its name and a clone of its service.
#[derive(Clone)]
#[non_exhaustive]
pub struct Picked<Req, Res> {
    /// The endpoint's name.
    pub name: String,
    /// Its service (calls on it bypass the balancer).
    pub service: BoxEndpoint<Req, Res>,
}

impl<Req, Res> fmt::Debug for Picked<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every endpoint's health and the overall health (a health monitor's view), serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The worst-case summary ([`overall`](crate::health::overall)).
    pub overall: Health,
    /// Each endpoint's name and health, in the order they were added.
    pub endpoints: Vec<(String, Health)>,
}
