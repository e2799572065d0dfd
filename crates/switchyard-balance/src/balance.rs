//! The balancer service: endpoints managed at runtime, a snapshot of the eligible ones, passive
//! outlier ejection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use switchyard_core::{Classify, ErrorsAsFailures, Outcome};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::endpoint::{EndpointConfig, EndpointStats, EndpointView, Health};
use crate::error::{EndpointError, NoAvailableEndpoint};
use crate::health::{HealthCheckConfig, HealthChecker, Report};
use crate::selector::{Hint, Pick, PickContext, Rng, Selector, Strategy};

/// Passive outlier detection, after Envoy's: an endpoint whose calls fail `consecutive_failures`
/// times in a row — or, with `failure_rate`, whose failure rate over its last calls reaches a
/// threshold — is ejected for `base_ejection` × the number of times it has been ejected (at most
/// `max_ejection`; the count starts over once the endpoint has stayed in for `max_ejection`), unless that would eject more than `max_ejection_percent` of the endpoints —
/// so the balancer never ejects everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (at least 1).
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// The first ejection's length; each further ejection is one more multiple of it.
    #[serde(default = "default_base", with = "switchyard_core::duration")]
    pub base_ejection: Duration,
    /// The longest ejection.
    #[serde(default = "default_max", with = "switchyard_core::duration")]
    pub max_ejection: Duration,
    /// The largest share of endpoints ejected at once, in percent (0 to 100).
    #[serde(default = "default_percent")]
    pub max_ejection_percent: u8,
    /// Also eject on a failure rate (off by default).
    #[serde(default)]
    pub failure_rate: Option<FailureRate>,
}

/// Ejection on a failure rate: over each run of `minimum_calls` classified calls to an
/// endpoint (a tumbling window), a failure share of at least `threshold_percent` ejects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// The failure share that ejects, in percent (1 to 100).
    pub threshold_percent: u8,
    /// The calls each window holds (at least 1).
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
}

const fn default_minimum_calls() -> u32 {
    20
}

const fn default_consecutive() -> u32 {
    5
}

const fn default_base() -> Duration {
    Duration::from_secs(30)
}

const fn default_max() -> Duration {
    Duration::from_secs(300)
}

const fn default_percent() -> u8 {
    50
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive(),
            base_ejection: default_base(),
            max_ejection: default_max(),
            max_ejection_percent: default_percent(),
            failure_rate: None,
        }
    }
}

use crate::selector::DECAY;

type HintFn<Req> = Arc<dyn Fn(&Req) -> Option<Hint> + Send + Sync>;

/// The endpoint a pick chose.
struct Chosen<S> {
    view: Arc<EndpointView>,
    service: S,
    /// The service's generation, to tell later whether it was replaced.
    generation: u32,
}

struct Member<S> {
    view: Arc<EndpointView>,
    service: S,
}

/// The eligible endpoints and the strategy's pick over them.
struct Snapshot<S> {
    views: Vec<Arc<EndpointView>>,
    services: Vec<S>,
    /// Each service's generation (`EndpointView::generation` when the snapshot was built).
    generations: Vec<u32>,
    pick: Option<Box<dyn Pick>>,
    /// The earliest time an ejected endpoint returns (ns since the epoch; `u64::MAX`: none).
    next_return: u64,
    /// No eligible endpoint is ready: `views` holds the not-ready ones (a call waits on its
    /// endpoint), and the balancer's `poll_ready` waits for one to become ready.
    waiting: bool,
}

struct Shared<S, Req> {
    name: Arc<str>,
    selector: Arc<dyn Selector>,
    members: Mutex<Vec<Member<S>>>,
    snapshot: ArcSwap<Snapshot<S>>,
    rng: Rng,
    epoch: Instant,
    outlier: Option<OutlierConfig>,
    hint: Option<HintFn<Req>>,
    /// Woken when a snapshot with a ready endpoint replaces one without.
    ready: Arc<Notify>,
}

/// Removes the member named `name`, if any, marking it removed (its health checker stops).
fn take_out<S>(members: &mut Vec<Member<S>>, name: &str) {
    members.retain(|m| {
        let keep = m.view.name() != name;
        if !keep {
            m.view.removed.store(true, Ordering::Release);
            m.view.gone.notify_waiters();
        }
        keep
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Clone, Req> Shared<S, Req> {
    /// Nanoseconds since the epoch, at least 1 (0 means "never" in the counters).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    /// Rebuilds the snapshot from `members` (the caller holds their lock).
    fn rebuild(&self, members: &[Member<S>]) {
        let now = self.now();
        let mut next_return = u64::MAX;
        let (mut views, mut services) = (Vec::new(), Vec::new());
        let (mut waiting_views, mut waiting_services) = (Vec::new(), Vec::new());
        for member in members {
            let until = member.view.ejected_until.load(Ordering::Relaxed);
            if until > now {
                next_return = next_return.min(until);
                continue;
            }
            if member.view.enabled() && member.view.health().is_eligible() {
                let (views, services) = if member.view.ready() {
                    (&mut views, &mut services)
                } else {
                    (&mut waiting_views, &mut waiting_services)
                };
                views.push(Arc::clone(&member.view));
                services.push(member.service.clone());
            }
        }
        // Not-ready endpoints are picked only when no eligible endpoint is ready.
        let waiting = views.is_empty() && !waiting_views.is_empty();
        if waiting {
            (views, services) = (waiting_views, waiting_services);
        }
        let pick = (!views.is_empty()).then(|| self.selector.build(&views));
        let generations = views
            .iter()
            .map(|v| v.generation.load(Ordering::Acquire))
            .collect();
        self.snapshot.store(Arc::new(Snapshot {
            views,
            services,
            generations,
            pick,
            next_return,
            waiting,
        }));
        if !waiting {
            self.ready.notify_waiters();
        }
    }

    fn changed(&self) {
        self.rebuild(&lock(&self.members));
    }

    fn none_available(&self) -> NoAvailableEndpoint {
        metrics::counter!(
            "switchyard_balance_no_endpoint_total",
            "balancer" => self.name.to_string(),
        )
        .increment(1);
        NoAvailableEndpoint::new(Arc::clone(&self.name))
    }

    /// The endpoint a call at `now` with `hint` goes to.
    fn choose(&self, now: u64, hint: Option<&Hint>) -> Option<Chosen<S>> {
        let snapshot = self.current_at(now);
        let preferred = hint.and_then(|h| {
            h.preferred
                .iter()
                .find_map(|name| snapshot.views.iter().position(|v| v.name() == name))
        });
        let cx = PickContext {
            hint,
            rng: &self.rng,
            now,
        };
        let index = preferred
            .or_else(|| {
                snapshot
                    .pick
                    .as_ref()
                    .and_then(|p| p.pick(&snapshot.views, &cx))
            })
            .filter(|i| *i < snapshot.views.len())?;
        Some(Chosen {
            view: Arc::clone(&snapshot.views[index]),
            service: snapshot.services[index].clone(),
            generation: snapshot.generations[index],
        })
    }

    /// The snapshot, rebuilt first if an ejected endpoint is due back at `now`.
    fn current_at(&self, now: u64) -> arc_swap::Guard<Arc<Snapshot<S>>> {
        let snapshot = self.snapshot.load();
        if snapshot.next_return <= now {
            drop(snapshot);
            self.changed();
            return self.snapshot.load();
        }
        snapshot
    }

    /// Sets `view`'s health, logging a change and rebuilding if eligibility changed.
    fn apply_health(&self, members: &[Member<S>], view: &EndpointView, health: Health) {
        let before = view.set_health(health);
        if before != health {
            tracing::info!(
                target: "switchyard_balance",
                balancer = %self.name,
                endpoint = view.name(),
                from = before.as_str(),
                to = health.as_str(),
                "endpoint health changed"
            );
            metrics::counter!(
                "switchyard_balance_health_changes_total",
                "balancer" => self.name.to_string(),
                "to" => health.as_str(),
            )
            .increment(1);
        }
        if before.is_eligible() != health.is_eligible() {
            self.rebuild(members);
        }
    }

    /// Ejects `view` if the cap allows; answers whether it did.
    fn eject(&self, view: &EndpointView, outlier: &OutlierConfig) -> bool {
        let members = lock(&self.members);
        let now = self.now();
        // A call to a removed or replaced endpoint says nothing about the members.
        if view.ejected_at(now) || !members.iter().any(|m| std::ptr::eq(&*m.view, view)) {
            return false;
        }
        let ejected = members.iter().filter(|m| m.view.ejected_at(now)).count();
        // Envoy's rule: eject while the ejected share is below the maximum (so one endpoint can
        // always be ejected when the maximum is above 0) — but never the last eligible one.
        let below_max =
            ejected * 100 < members.len() * usize::from(outlier.max_ejection_percent.min(100));
        let others_eligible = self
            .snapshot
            .load()
            .views
            .iter()
            .any(|v| !std::ptr::eq(&**v, view));
        if !below_max || !others_eligible {
            view.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::debug!(
                target: "switchyard_balance",
                balancer = %self.name,
                endpoint = view.name(),
                ejected,
                "not ejecting: at the max-ejection cap"
            );
            return false;
        }
        // An endpoint that has stayed in for `max_ejection` since its last ejection ended
        // starts over at one `base_ejection`.
        let last_until = view.ejected_until.load(Ordering::Relaxed);
        let max_ns = u64::try_from(outlier.max_ejection.as_nanos()).unwrap_or(u64::MAX);
        if last_until > 0 && now > last_until.saturating_add(max_ns) {
            view.times_ejected.store(0, Ordering::Relaxed);
        }
        let times = view.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let length = outlier
            .base_ejection
            .saturating_mul(times)
            .min(outlier.max_ejection);
        let length_ns = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        view.ejected_until
            .store(now.saturating_add(length_ns), Ordering::Relaxed);
        view.consecutive_failures.store(0, Ordering::Relaxed);
        view.window_calls.store(0, Ordering::Relaxed);
        view.window_failures.store(0, Ordering::Relaxed);
        tracing::warn!(
            target: "switchyard_balance",
            balancer = %self.name,
            endpoint = view.name(),
            times,
            for_ms = length.as_millis() as u64,
            "endpoint ejected"
        );
        metrics::counter!(
            "switchyard_balance_ejections_total",
            "balancer" => self.name.to_string(),
            "endpoint" => view.name().to_owned(),
        )
        .increment(1);
        self.rebuild(&members);
        true
    }
}

impl<Req: 'static, Res: 'static> Shared<Endpoint<Req, Res>, Req> {
    /// Marks `view` ready or not, rebuilding the snapshot if that changed (and `view` is still
    /// a member).
    fn set_pending(&self, view: &EndpointView, pending: bool) {
        if view.pending.swap(pending, Ordering::AcqRel) == pending {
            return;
        }
        let members = lock(&self.members);
        if members.iter().any(|m| std::ptr::eq(&*m.view, view)) {
            tracing::debug!(
                target: "switchyard_balance",
                balancer = %self.name,
                endpoint = view.name(),
                ready = !pending,
                "endpoint readiness changed"
            );
            self.rebuild(&members);
        }
    }

    /// The service `view` stands for now, unless it was removed.
    fn service_of(&self, view: &EndpointView) -> Option<Endpoint<Req, Res>> {
        lock(&self.members)
            .iter()
            .find(|m| std::ptr::eq(&*m.view, view))
            .map(|m| m.service.clone())
    }

    /// Starts driving `view`'s readiness in the background, unless a task already does.
    /// Answers whether a task drives it (not without a tokio runtime to run one).
    fn probe(self: &Arc<Self>, view: &Arc<EndpointView>) -> bool {
        if view.probing.swap(true, Ordering::AcqRel) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            view.probing.store(false, Ordering::Release);
            return false;
        };
        runtime.spawn(drive(Arc::clone(self), Arc::clone(view)));
        true
    }
}

/// Drives one endpoint's readiness: polls a clone of its service until it is ready, marking
/// the endpoint not ready meanwhile (if it was not ready at once), then drops the clone, so
/// nothing it reserved (a `Buffer` slot, a concurrency permit) is held. Woken by the service,
/// never by a timer: no busy loop. Ends when the endpoint is removed; starts over with the new
/// service when it is replaced. An `Err` from `poll_ready` marks it ready again: the calls sent
/// to it then fail with that error, which outlier detection and health checks act on.
async fn drive<Req: 'static, Res: 'static>(
    shared: Arc<Shared<Endpoint<Req, Res>, Req>>,
    view: Arc<EndpointView>,
) {
    // However the task ends — done, the endpoint removed, a panic in the endpoint's
    // `poll_ready`, or its runtime shutting down — the endpoint is marked ready again and
    // the next call that finds it not ready starts a new task: it never stays out with
    // nothing driving it.
    let _done = Driven {
        shared: Arc::clone(&shared),
        view: Arc::clone(&view),
    };
    loop {
        let gone = view.gone.notified();
        let mut gone = std::pin::pin!(gone);
        gone.as_mut().enable();
        let service = if view.removed.load(Ordering::Acquire) {
            None
        } else {
            shared.service_of(&view)
        };
        let Some(mut service) = service else {
            return;
        };
        let mut first = true;
        let outcome = std::future::poll_fn(|cx| {
            if gone.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let poll = service.poll_ready(cx);
            if first && poll.is_pending() {
                shared.set_pending(&view, true);
            }
            first = false;
            poll.map(Some)
        })
        .await;
        let Some(outcome) = outcome else {
            continue;
        };
        drop(service);
        if let Err(error) = outcome {
            tracing::debug!(
                target: "switchyard_balance",
                balancer = %shared.name,
                endpoint = view.name(),
                %error,
                "endpoint's poll_ready failed"
            );
        }
        return;
    }
}

/// Ends a readiness task: see `drive`.
struct Driven<Req: 'static, Res: 'static> {
    shared: Arc<Shared<Endpoint<Req, Res>, Req>>,
    view: Arc<EndpointView>,
}

impl<Req: 'static, Res: 'static> Drop for Driven<Req, Res> {
    fn drop(&mut self) {
        // In this order: a call that finds the endpoint not ready after `probing` is cleared
        // starts a new task, which marks it again.
        self.view.probing.store(false, Ordering::Release);
        self.shared.set_pending(&self.view, false);
    }
}

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
    shared: Arc<Shared<Endpoint<Req, Res>, Req>>,
    classifier: C,
    /// While `poll_ready` waits for an endpoint to become ready (this clone's own wait).
    waiting: Option<Pin<Box<OwnedNotified>>>,
    /// While `poll_ready` waits: the return of the first ejected endpoint.
    until: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// An endpoint's service as a balancer holds it: any service, boxed once when added. Erasing
/// the type keeps `Service` bounds on the error type off the balancer itself (such bounds make
/// an `async` block awaiting it fail to prove `Send`: rust-lang/rust#110338).
pub type Endpoint<Req, Res> = BoxCloneSyncService<Req, Res, BoxError>;

fn boxed<S, Req, Res>(service: S) -> Endpoint<Req, Res>
where
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

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
                snapshot: ArcSwap::from_pointee(Snapshot {
                    views: Vec::new(),
                    services: Vec::new(),
                    generations: Vec::new(),
                    pick: None,
                    next_return: u64::MAX,
                    waiting: false,
                }),
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
    fn configure(mut self, f: impl FnOnce(&mut Shared<Endpoint<Req, Res>, Req>)) -> Self {
        let shared = Arc::get_mut(&mut self.shared)
            .expect("configure the balancer before cloning it or adding endpoints");
        f(shared);
        self
    }

    /// Ejects endpoints that keep failing, as `outlier` says.
    ///
    /// # Panics
    ///
    /// If the balancer was already cloned.
    #[must_use]
    pub fn with_outlier(self, outlier: OutlierConfig) -> Self {
        self.configure(|s| s.outlier = Some(outlier))
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
    /// [`EndpointError::Duplicate`] if the name is taken.
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

    /// The overall health of the endpoints, by the seed's worst-case rule
    /// ([`overall`](crate::health::overall)).
    pub fn overall_health(&self) -> Health {
        crate::health::overall(lock(&self.shared.members).iter().map(|m| m.view.health()))
    }

    /// The seed's `HealthMonitor` view: every endpoint's health and the overall one.
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
    /// [`EndpointError::NotFound`].
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
            Arc::new(Reporter {
                shared: Arc::clone(&self.shared),
                view,
            }),
        ))
    }

    /// Follows a `tower::discover::Discover` stream (any `TryStream` of `Change`s): an
    /// `Insert` adds the endpoint with `config` (for a key already there, it replaces only the
    /// service: health, ejection state and stats carry over), a `Remove` removes it; calls in flight finish either way. Keys become endpoint names through
    /// `Display`. Runs until the stream ends or the handle is dropped.
    ///
    /// Must be called within a tokio runtime.
    pub fn follow<D>(&self, discover: D, config: EndpointConfig) -> Discovery
    where
        D: Discover + Send + 'static,
        D::Key: fmt::Display,
        D::Error: Into<BoxError>,
        D::Service: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
        <D::Service as Service<Req>>::Error: Into<BoxError> + 'static,
        <D::Service as Service<Req>>::Future: Send + 'static,
        Req: 'static,
        Res: 'static,
    {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let mut discover = std::pin::pin!(discover);
            while let Some(change) =
                std::future::poll_fn(|cx| discover.as_mut().poll_discover(cx)).await
            {
                let mut members = lock(&shared.members);
                match change {
                    Ok(Change::Insert(key, service)) => {
                        let name: Arc<str> = key.to_string().into();
                        let service = boxed(service);
                        // A known key keeps its view: health, ejection and stats carry over.
                        let view = match members.iter_mut().find(|m| *m.view.name() == *name) {
                            Some(member) => {
                                member.service = service;
                                // A task driving the old service's readiness moves to the new
                                // one; calls waiting on the old one pick again.
                                member.view.generation.fetch_add(1, Ordering::AcqRel);
                                member.view.gone.notify_waiters();
                                Arc::clone(&member.view)
                            }
                            None => {
                                let view = Arc::new(EndpointView::new(name, &config));
                                members.push(Member {
                                    view: Arc::clone(&view),
                                    service,
                                });
                                view
                            }
                        };
                        shared.rebuild(&members);
                        drop(members);
                        let _ = shared.probe(&view);
                        continue;
                    }
                    Ok(Change::Remove(key)) => {
                        let name = key.to_string();
                        take_out(&mut members, &name);
                    }
                    Err(error) => {
                        let error: BoxError = error.into();
                        tracing::warn!(target: "switchyard_balance", balancer = %shared.name, %error, "discovery failed");
                        continue;
                    }
                }
                shared.rebuild(&members);
            }
        });
        Discovery { task }
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
        self.current_at(self.shared.now())
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
        self.choose(now, hint)
            .map(|chosen| Picked {
                name: chosen.view.name().to_owned(),
                service: chosen.service,
            })
            .ok_or_else(|| self.none_available())
    }

    fn none_available(&self) -> NoAvailableEndpoint {
        self.shared.none_available()
    }

    fn choose(&self, now: u64, hint: Option<&Hint>) -> Option<Chosen<Endpoint<Req, Res>>> {
        self.shared.choose(now, hint)
    }

    fn current_at(&self, now: u64) -> arc_swap::Guard<Arc<Snapshot<Endpoint<Req, Res>>>> {
        self.shared.current_at(now)
    }
}

impl<Req, Res, C> Service<Req> for Balance<Req, Res, C>
where
    C: Classify<Res, BoxError> + Clone,
    Req: 'static,
    Res: 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = BalanceFuture<Req, Res, C>;

    /// Ready when an eligible endpoint is ready, or when none is eligible (the call then fails
    /// with [`NoAvailableEndpoint`], as `tower::load_shed` would). While every eligible
    /// endpoint is not ready, waits — woken when one becomes ready, never by polling.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The common case costs one snapshot load: no clock read unless every eligible
        // endpoint is not ready.
        if !self.shared.snapshot.load().waiting {
            self.waiting = None;
            self.until = None;
            return Poll::Ready(Ok(()));
        }
        loop {
            let snapshot = self.current_at(self.shared.now());
            if !snapshot.waiting {
                self.waiting = None;
                self.until = None;
                return Poll::Ready(Ok(()));
            }
            let next_return = snapshot.next_return;
            drop(snapshot);
            // An ejected endpoint coming back also ends the wait.
            if next_return != u64::MAX {
                let at = self.shared.epoch + Duration::from_nanos(next_return.saturating_sub(1));
                match &mut self.until {
                    Some(sleep) if sleep.deadline() == at => {}
                    until => *until = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                if let Some(sleep) = &mut self.until
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    self.until = None;
                    continue;
                }
            }
            match &mut self.waiting {
                // Registered before the snapshot is read again, so a wake between the two is
                // not missed.
                None => {
                    let mut notified = Box::pin(Arc::clone(&self.shared.ready).notified_owned());
                    notified.as_mut().enable();
                    self.waiting = Some(notified);
                }
                Some(notified) => {
                    std::task::ready!(notified.as_mut().poll(cx));
                    self.waiting = None;
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // One clock read per call here and one when it ends (each is a thread-local lookup).
        let now = self.shared.now();
        let hint = self.shared.hint.as_ref().and_then(|f| f(&req));
        let Some(Chosen {
            view,
            service,
            generation,
        }) = self.choose(now, hint.as_ref())
        else {
            return BalanceFuture {
                state: State::Refused {
                    error: Some(Box::new(self.none_available())),
                },
            };
        };
        view.in_flight.fetch_add(1, Ordering::Relaxed);
        view.total.fetch_add(1, Ordering::Relaxed);
        view.last_used.store(now, Ordering::Relaxed);
        BalanceFuture {
            state: State::Readying {
                service: Some(service),
                generation,
                req: Some(req),
                gone: None,
                call: Some(Call {
                    view,
                    shared: Arc::clone(&self.shared),
                    started: now,
                    classifier: self.classifier.clone(),
                    finished: false,
                    epoch: self.shared.epoch,
                }),
            },
        }
    }
}

/// An endpoint [`Balance::pick`] chose: its name and a clone of its service.
#[derive(Clone)]
#[non_exhaustive]
pub struct Picked<Req, Res> {
    /// The endpoint's name.
    pub name: String,
    /// Its service (calls on it bypass the balancer).
    pub service: Endpoint<Req, Res>,
}

impl<Req, Res> fmt::Debug for Picked<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every endpoint's health and the overall health (the seed's `HealthMonitor`), serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The worst-case summary ([`overall`](crate::health::overall)).
    pub overall: Health,
    /// Each endpoint's name and health, in the order they were added.
    pub endpoints: Vec<(String, Health)>,
}

/// A running [`Balance::follow`]; dropping it stops following (endpoints stay as they are).
#[derive(Debug)]
#[must_use = "dropping it stops following the stream"]
pub struct Discovery {
    task: tokio::task::JoinHandle<()>,
}

impl Discovery {
    /// Whether the stream is still followed (it ends when the stream does).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A health checker's way back to its endpoint.
struct Reporter<S, Req> {
    shared: Arc<Shared<S, Req>>,
    view: Arc<EndpointView>,
}

impl<S, Req> Report for Reporter<S, Req>
where
    S: Clone + Send + Sync + 'static,
    Req: 'static,
{
    fn alive(&self) -> bool {
        !self.view.removed.load(Ordering::Relaxed)
    }

    fn report(&self, health: Health) -> bool {
        let members = lock(&self.shared.members);
        if !members.iter().any(|m| Arc::ptr_eq(&m.view, &self.view)) {
            return false;
        }
        // An endpoint taken offline by hand stays offline whatever its checks say.
        if !self.view.held_offline.load(Ordering::Acquire) {
            self.shared.apply_health(&members, &self.view, health);
        }
        true
    }
}

/// One call's bookkeeping: released on completion, or on drop if the call is cancelled.
struct Call<S, Req, C> {
    view: Arc<EndpointView>,
    shared: Arc<Shared<S, Req>>,
    /// When the call started, in nanoseconds since the balancer's epoch.
    started: u64,
    classifier: C,
    /// Whether `finish` ran (the call completed rather than being dropped).
    finished: bool,
    /// The balancer's epoch, for `Drop`, which has no bounds to reach `Shared::now` with.
    epoch: Instant,
}

impl<S, Req, C> Call<S, Req, C> {
    fn shared_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }
}

impl<S: Clone, Req, C> Call<S, Req, C> {
    fn finish<T>(&mut self, result: Result<&T, &BoxError>)
    where
        C: Classify<T, BoxError>,
    {
        self.finished = true;
        let view = &self.view;
        let now = self.shared.now();
        record_latency(
            view,
            Duration::from_nanos(now.saturating_sub(self.started)),
            now,
        );
        match self.classifier.classify(result) {
            Outcome::Success => {
                view.successes.fetch_add(1, Ordering::Relaxed);
                view.consecutive_failures.store(0, Ordering::Relaxed);
                self.window(false);
            }
            Outcome::Failure => {
                view.failures.fetch_add(1, Ordering::Relaxed);
                let failures = view.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(outlier) = &self.shared.outlier
                    && failures >= outlier.consecutive_failures.max(1)
                {
                    self.shared.eject(view, outlier);
                }
                self.window(true);
            }
            Outcome::Ignored => {}
        }
    }

    /// Counts one call in the endpoint's failure-rate window; a full window is judged, then
    /// started again.
    fn window(&self, failed: bool) {
        let Some(outlier) = &self.shared.outlier else {
            return;
        };
        let Some(rate) = &outlier.failure_rate else {
            return;
        };
        let view = &self.view;
        let failures = view
            .window_failures
            .fetch_add(u32::from(failed), Ordering::Relaxed)
            + u32::from(failed);
        let calls = view.window_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if calls < rate.minimum_calls.max(1) {
            return;
        }
        view.window_calls.store(0, Ordering::Relaxed);
        view.window_failures.store(0, Ordering::Relaxed);
        if u64::from(failures) * 100 >= u64::from(rate.threshold_percent.max(1)) * u64::from(calls)
        {
            self.shared.eject(view, outlier);
        }
    }
}

impl<S, Req, C> Drop for Call<S, Req, C> {
    fn drop(&mut self) {
        if !self.finished {
            // Cancelled (a caller's timeout): its time so far still says how slow the endpoint
            // is, so a hung endpoint does not look fast to `least-latency`.
            let now = self.shared_now();
            record_latency(
                &self.view,
                Duration::from_nanos(now.saturating_sub(self.started)),
                now,
            );
        }
        self.view.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Folds one round-trip time into the endpoint's peak EWMA: a slower sample replaces the
/// estimate at once (the peak), a faster one pulls it down with a weight that decays with the
/// time since the last sample.
fn record_latency(view: &EndpointView, rtt: Duration, now: u64) {
    let rtt = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
    let previous = view.ewma_ns.load(Ordering::Relaxed);
    let since = now.saturating_sub(view.ewma_at.swap(now, Ordering::Relaxed));
    let next = if previous == 0 || rtt > previous {
        rtt
    } else {
        let keep = (-(since as f64) / DECAY.as_nanos() as f64).exp();
        (previous as f64 * keep + rtt as f64 * (1.0 - keep)) as u64
    };
    view.ewma_ns.store(next.max(1), Ordering::Relaxed);
}

pin_project! {
    /// The response future of [`Balance`].
    pub struct BalanceFuture<Req, Res, C> {
        state: State<Req, Res, C>,
    }
}

type CallOf<Req, Res, C> = Call<Endpoint<Req, Res>, Req, C>;

enum State<Req, Res, C> {
    /// Waiting for the chosen endpoint's clone to be ready.
    Readying {
        service: Option<Endpoint<Req, Res>>,
        /// The service's generation when it was picked.
        generation: u32,
        req: Option<Req>,
        /// Set once the endpoint was found not ready: wakes the call if the endpoint leaves
        /// (removed, or its service replaced), so it picks again instead of waiting on it.
        gone: Option<Pin<Box<OwnedNotified>>>,
        call: Option<CallOf<Req, Res, C>>,
    },
    Calling {
        future: <Endpoint<Req, Res> as Service<Req>>::Future,
        call: Option<CallOf<Req, Res, C>>,
    },
    Refused {
        error: Option<BoxError>,
    },
}

impl<Req, Res, C> fmt::Debug for BalanceFuture<Req, Res, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BalanceFuture")
    }
}

impl<Req, Res, C> Future for BalanceFuture<Req, Res, C>
where
    C: Classify<Res, BoxError>,
    Req: 'static,
    Res: 'static,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.project().state;
        loop {
            match state {
                State::Readying {
                    service,
                    generation,
                    req,
                    gone,
                    call,
                } => {
                    let c = call
                        .as_mut()
                        .expect("BalanceFuture polled after completion");
                    if let Some(notified) = gone {
                        let left = notified.as_mut().poll(cx).is_ready()
                            || c.view.removed.load(Ordering::Acquire)
                            || c.view.generation.load(Ordering::Acquire) != *generation;
                        if left {
                            // The request was not sent: pick again.
                            *gone = None;
                            let shared = Arc::clone(&c.shared);
                            let now = shared.now();
                            let hint = shared
                                .hint
                                .as_ref()
                                .and_then(|f| f(req.as_ref().expect("request taken once")));
                            match shared.choose(now, hint.as_ref()) {
                                Some(chosen) => {
                                    c.view.in_flight.fetch_sub(1, Ordering::Relaxed);
                                    chosen.view.in_flight.fetch_add(1, Ordering::Relaxed);
                                    chosen.view.total.fetch_add(1, Ordering::Relaxed);
                                    chosen.view.last_used.store(now, Ordering::Relaxed);
                                    c.view = chosen.view;
                                    c.started = now;
                                    *service = Some(chosen.service);
                                    *generation = chosen.generation;
                                }
                                None => {
                                    // Not a measurement of the endpoint it left.
                                    c.finished = true;
                                    *state = State::Refused {
                                        error: Some(Box::new(shared.none_available())),
                                    };
                                }
                            }
                            continue;
                        }
                    }
                    let endpoint = service
                        .as_mut()
                        .expect("BalanceFuture polled after completion");
                    match endpoint.poll_ready(cx) {
                        Poll::Pending => {
                            if gone.is_some() {
                                return Poll::Pending;
                            }
                            // Picked while not ready: this call waits for it (unless it
                            // leaves), later ones go elsewhere until a background task sees
                            // it ready.
                            let mut notified = Box::pin(Arc::clone(&c.view.gone).notified_owned());
                            notified.as_mut().enable();
                            *gone = Some(notified);
                            c.shared.set_pending(&c.view, true);
                            if !c.shared.probe(&c.view) {
                                // Nothing could bring it back (no runtime): do not leave it out.
                                c.shared.set_pending(&c.view, false);
                            }
                            // Poll the notification once, so its wake is registered.
                            continue;
                        }
                        Poll::Ready(Err(error)) => {
                            let mut call = call.take();
                            *state = State::Refused { error: None };
                            let result = Err(error);
                            if let Some(call) = &mut call {
                                call.finish(result.as_ref());
                            }
                            return Poll::Ready(result);
                        }
                        Poll::Ready(Ok(())) => {
                            let future = endpoint.call(req.take().expect("request taken once"));
                            *state = State::Calling {
                                future,
                                call: call.take(),
                            };
                        }
                    }
                }
                State::Calling { future, call } => {
                    let result = std::task::ready!(future.as_mut().poll(cx));
                    if let Some(mut call) = call.take() {
                        call.finish(result.as_ref());
                    }
                    return Poll::Ready(result);
                }
                State::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("BalanceFuture polled after completion")));
                }
            }
        }
    }
}
