//! The manager: initializes providers from a registry, selects among them, closes them.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use serde_json::Value;
use switchyard_balance::{
    Balance, BalanceFuture, EndpointConfig, EndpointError, EndpointStats, Health,
    HealthCheckConfig, HealthChecker, HealthReport, Hint, OutlierConfig, Picked, Strategy,
};
use switchyard_core::sync::lock;
use switchyard_core::{ConfigError, panic_message};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::error::{CloseErrors, CloseTimedOut, ProviderError};
use crate::lifecycle::{BoxProvider, Hook};
use crate::registry::ProviderRegistry;

// === Selection ===

/// How [`Manager::get`] (and the manager as a `Service`) picks a provider. Each is a
/// switchyard-balance strategy over the initialized providers, so every one skips providers
/// that are unhealthy (an active check or [`Manager::set_health`]) or ejected by outlier
/// detection, and passes over those not ready (their `poll_ready` pending) while another is
/// ready — availability is tower's readiness plus health, not a separate flag.
/// (When every healthy provider is not ready, one is still picked: a call waits on it.) A
/// [default](Manager::set_default) provider, while available, is picked first by every
/// selection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Selection {
    /// The first available provider in initialization order (a health-check
    /// selector; the balancer's `priority` strategy, one tier per provider).
    #[default]
    FirstAvailable,
    /// The first available provider in this order (a priority selector); providers
    /// not listed are never picked.
    Priority(Vec<String>),
    /// In turn (round robin).
    RoundRobin,
    /// Any of the balancer's strategies (`least-latency`, `weighted-random`, ...).
    Strategy(Strategy),
}

impl Selection {
    fn strategy(&self) -> Strategy {
        match self {
            Self::FirstAvailable | Self::Priority(_) => Strategy::Priority,
            Self::RoundRobin => Strategy::RoundRobin,
            Self::Strategy(strategy) => *strategy,
        }
    }

    /// The endpoint settings of the provider initialized `sequence`-th.
    fn endpoint(&self, name: &str, sequence: i32) -> EndpointConfig {
        match self {
            // The balancer prefers the higher tier: earlier providers get higher ones.
            Self::FirstAvailable => EndpointConfig::default().with_priority(-sequence),
            Self::Priority(order) => match order.iter().position(|n| n == name) {
                Some(index) => EndpointConfig::default()
                    .with_priority(i32::try_from(order.len() - index).unwrap_or(i32::MAX)),
                None => EndpointConfig {
                    enabled: false,
                    ..EndpointConfig::default()
                },
            },
            Self::RoundRobin | Self::Strategy(_) => EndpointConfig::default(),
        }
    }
}

// === the providers and their lifecycle state ===

/// An initialized provider's close hook, kept in initialization order.
struct Entry {
    name: String,
    close: Option<Hook>,
}

#[derive(Default)]
struct State {
    /// Initialized providers, in the order they were initialized.
    order: Vec<Entry>,
    /// Providers `close_all` took out and has not closed yet (closed from the back).
    closing: Vec<Entry>,
    /// Names being initialized now.
    initializing: HashSet<String>,
    /// Set by `close_all`, with the deadline it gave each close.
    closed: Option<Duration>,
    /// Providers initialized so far (the `FirstAvailable` tiers).
    sequence: i32,
}

struct Inner<Req, Res> {
    registry: Arc<ProviderRegistry<Req, Res>>,
    selection: Selection,
    state: Mutex<State>,
    default: Arc<ArcSwapOption<String>>,
}

/// How long a provider refused after it initialized gets to close, when no `close_all`
/// deadline applies.
const DEFAULT_CLOSE_DEADLINE: Duration = Duration::from_secs(30);

type Wrap<Req, Res> = Box<dyn FnOnce(BoxProvider<Req, Res>) -> BoxProvider<Req, Res> + Send>;

// === impl Manager ===

/// The provider manager: builds providers from a [`ProviderRegistry`]'s
/// factories, runs their opt-in [`Initialize`](crate::Initialize) once before first use,
/// selects among them ([`Selection`]), and closes them ([`Close`](crate::Close)) in reverse
/// initialization order.
///
/// The manager is itself a `Service<Req>` that sends each call to the selected provider
/// (through a switchyard-balance `Balance`, so calls are counted in [`stats`](Self::stats)
/// and seen by outlier detection). [`get`](Self::get) hands out the selected provider instead.
/// Clones share everything.
pub struct Manager<Req, Res> {
    inner: Arc<Inner<Req, Res>>,
    balance: Balance<Req, Res>,
}

impl<Req, Res> Clone for Manager<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            balance: self.balance.clone(),
        }
    }
}

impl<Req, Res> fmt::Debug for Manager<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("name", &self.balance.name())
            .field("selection", &self.inner.selection)
            .field("providers", &self.names())
            .finish_non_exhaustive()
    }
}

/// Frees a name reserved for initialization if the initialization ends early (an error, or
/// the caller dropping the future).
struct Reservation<'a> {
    state: &'a Mutex<State>,
    name: &'a str,
    /// Cleared once the name moved to `order` (under the lock that moved it).
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(self.state).initializing.remove(self.name);
        }
    }
}

impl<Req, Res> Manager<Req, Res>
where
    Req: 'static,
    Res: 'static,
{
    /// A manager named `name` (in errors, metrics and events) over `registry`'s factories.
    pub fn new(
        name: impl Into<Arc<str>>,
        registry: Arc<ProviderRegistry<Req, Res>>,
        selection: Selection,
    ) -> Self {
        let default: Arc<ArcSwapOption<String>> = Arc::default();
        let balance = Balance::new(name, selection.strategy()).with_hint({
            let default = Arc::clone(&default);
            move |_: &Req| {
                default.load().as_ref().map(|name| Hint {
                    key: None,
                    preferred: vec![String::clone(name)],
                })
            }
        });
        Self {
            inner: Arc::new(Inner {
                registry,
                selection,
                state: Mutex::default(),
                default,
            }),
            balance,
        }
    }

    /// Ejects providers whose calls through the manager keep failing (switchyard-balance's
    /// outlier detection).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `outlier` is invalid ([`OutlierConfig::validate`]).
    ///
    /// # Panics
    ///
    /// If the manager was already cloned.
    pub fn with_outlier(mut self, outlier: OutlierConfig) -> Result<Self, ConfigError> {
        self.balance = self.balance.with_outlier(outlier)?;
        Ok(self)
    }

    /// Builds provider `name` from the factory of that name with `config`, initializes it if
    /// it opts into [`Initialize`](crate::Initialize), and makes it available.
    ///
    /// # Errors
    ///
    /// The build's errors ([`ProviderRegistry::build`]), [`ProviderError::Initialize`] (the
    /// provider is left out; the others are untouched), [`ProviderError::AlreadyInitialized`], or
    /// [`ProviderError::Closed`] (a provider whose initialization finishes after
    /// [`close_all`](Self::close_all) started is closed at once).
    pub async fn initialize(&self, name: &str, config: &Value) -> Result<(), ProviderError> {
        self.init(name, config, Box::new(|service| service)).await
    }

    /// As [`initialize`](Self::initialize), with the provider wrapped in `layer` — a
    /// resilience stack from [`patterns`](crate::patterns), or any tower `Layer`. The
    /// provider's own `Initialize` and `Close` run on the provider itself, not through the
    /// layer.
    ///
    /// # Errors
    ///
    /// As [`initialize`](Self::initialize).
    pub fn initialize_with<'a, L>(
        &'a self,
        name: &'a str,
        config: &'a Value,
        layer: L,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send + 'a
    where
        L: Layer<BoxProvider<Req, Res>> + Send + 'static,
        L::Service: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
        <L::Service as Service<Req>>::Error: Into<BoxError> + 'static,
        <L::Service as Service<Req>>::Future: Send + 'static,
        Req: Send,
        Res: Send,
    {
        // The layer's bounds stay here, out of the `async` body (rust-lang/rust#110338).
        let wrap: Wrap<Req, Res> = Box::new(move |service| {
            BoxCloneSyncService::new(layer.layer(service).map_err(Into::into))
        });
        self.init(name, config, wrap)
    }

    fn reserve<'a>(&'a self, name: &'a str) -> Result<Reservation<'a>, ProviderError> {
        let mut state = lock(&self.inner.state);
        if state.closed.is_some() {
            return Err(ProviderError::Closed);
        }
        if state.order.iter().any(|e| e.name == name) || !state.initializing.insert(name.to_owned())
        {
            return Err(ProviderError::AlreadyInitialized(name.to_owned()));
        }
        Ok(Reservation {
            state: &self.inner.state,
            name,
            armed: true,
        })
    }

    async fn init(
        &self,
        name: &str,
        config: &Value,
        wrap: Wrap<Req, Res>,
    ) -> Result<(), ProviderError> {
        let result = self.try_init(name, config, wrap).await;
        let outcome = match &result {
            Ok(()) => {
                tracing::info!(target: "switchyard_provider", manager = self.name(), provider = name, "provider initialized");
                "ok"
            }
            Err(error) => {
                tracing::warn!(target: "switchyard_provider", manager = self.name(), provider = name, %error, "provider not initialized");
                "error"
            }
        };
        metrics::counter!(
            "switchyard_provider_initializations_total",
            "manager" => self.name().to_owned(),
            "provider" => name.to_owned(),
            "outcome" => outcome,
        )
        .increment(1);
        result
    }

    async fn try_init(
        &self,
        name: &str,
        config: &Value,
        wrap: Wrap<Req, Res>,
    ) -> Result<(), ProviderError> {
        let mut reservation = self.reserve(name)?;
        let provider = self.inner.registry.build(name, config)?;
        if let Some(initialize) = &provider.initialize {
            let outcome = AssertUnwindSafe(initialize()).catch_unwind().await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(panic) => {
                    Some(format!("initialize panicked: {}", panic_message(&*panic)).into())
                }
            };
            if let Some(source) = error {
                return Err(ProviderError::Initialize {
                    provider: name.to_owned(),
                    source,
                });
            }
        }
        let service = wrap(provider.service);
        // Hand the name from `initializing` to `order` under one lock, so a concurrent
        // initialization of the same name never slips in between (the reservation's drop
        // would lock again).
        let refused = {
            let mut state = lock(&self.inner.state);
            state.initializing.remove(name);
            reservation.armed = false;
            if let Some(deadline) = state.closed {
                Some((ProviderError::Closed, deadline))
            } else if !self.inner.registry.cache(name, service.clone()) {
                // Another manager over the same registry holds this name.
                Some((
                    ProviderError::AlreadyInitialized(name.to_owned()),
                    DEFAULT_CLOSE_DEADLINE,
                ))
            } else {
                let endpoint = self.inner.selection.endpoint(name, state.sequence);
                state.sequence = state.sequence.saturating_add(1);
                // The name is reserved: the balancer has no endpoint of that name.
                let _ = self.balance.add(name.to_owned(), service, &endpoint);
                state.order.push(Entry {
                    name: name.to_owned(),
                    close: provider.close.clone(),
                });
                None
            }
        };
        if let Some((error, deadline)) = refused {
            // Initialized but never served (`close_all` ran meanwhile, or the name was taken):
            // close it now rather than leak what it holds.
            if let Some(close) = provider.close
                && let Err(close_error) = close_one(name, &close, deadline).await
            {
                tracing::warn!(target: "switchyard_provider", provider = name, error = %close_error, "provider refused after initializing failed to close");
            }
            return Err(error);
        }
        Ok(())
    }

    /// Starts an active health check of provider `name` (switchyard-balance's
    /// [`Balance::check`]): `check` is called every `config.interval`; failures in a row make
    /// the provider `Unhealthy` and it is not picked until checks pass again.
    ///
    /// # Errors
    ///
    /// [`ProviderError::NotFound`], or [`ProviderError::InvalidConfig`] if `config` is invalid
    /// ([`HealthCheckConfig::validate`]).
    pub fn check<K>(
        &self,
        name: &str,
        check: K,
        config: &HealthCheckConfig,
    ) -> Result<HealthChecker, ProviderError>
    where
        K: Service<(), Response = Health> + Send + 'static,
        K::Error: Into<BoxError>,
        K::Future: Send,
    {
        self.balance
            .check(name, check, config)
            .map_err(|error| match error {
                EndpointError::InvalidConfig(error) => ProviderError::InvalidConfig {
                    provider: name.to_owned(),
                    error,
                },
                _ => ProviderError::NotFound(name.to_owned()),
            })
    }

    /// Closes every provider, in reverse initialization order: all leave the selection first, then
    /// each [`Close`](crate::Close) runs, with `deadline` for each one. One failing, panicking or
    /// timing out never skips the others. If this future is dropped halfway, the providers not
    /// closed yet are closed by the next `close_all`. The manager stays closed: later
    /// [`initialize`](Self::initialize) and [`get`](Self::get) calls fail with
    /// [`ProviderError::Closed`]. Calls in flight keep their clones of the providers; drain them
    /// first (a server's graceful shutdown) if closing would cut them.
    ///
    /// # Errors
    ///
    /// [`CloseErrors`] listing each provider whose close failed.
    pub async fn close_all(&self, deadline: Duration) -> Result<(), CloseErrors> {
        // Every provider leaves the selection and the cache before the first close runs, so
        // if this future is dropped halfway, none keeps serving; the ones not closed yet stay
        // queued, and the next `close_all` closes them.
        let names: Vec<String> = {
            let mut state = lock(&self.inner.state);
            state.closed = Some(deadline);
            let order = std::mem::take(&mut state.order);
            let names = order.iter().map(|e| e.name.clone()).collect();
            state.closing.extend(order);
            names
        };
        self.inner.default.store(None);
        for name in &names {
            let _ = self.balance.remove(name);
            self.inner.registry.evict(name);
        }
        let mut errors = Vec::new();
        // Reverse initialization order; each is taken off the queue as its close starts
        // (a close interrupted by dropping this future is not run twice).
        while let Some(entry) = self.next_to_close() {
            let outcome = match &entry.close {
                None => "ok",
                Some(close) => match close_one(&entry.name, close, deadline).await {
                    Ok(()) => "ok",
                    Err(error) => {
                        let timed_out = error.is::<CloseTimedOut>();
                        tracing::warn!(target: "switchyard_provider", manager = self.name(), provider = entry.name, %error, "provider failed to close");
                        errors.push((entry.name.clone(), error));
                        if timed_out { "timeout" } else { "error" }
                    }
                },
            };
            tracing::info!(target: "switchyard_provider", manager = self.name(), provider = entry.name, outcome, "provider closed");
            metrics::counter!(
                "switchyard_provider_closes_total",
                "manager" => self.name().to_owned(),
                "provider" => entry.name,
                "outcome" => outcome,
            )
            .increment(1);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CloseErrors::new(errors))
        }
    }
}

impl<Req, Res> Manager<Req, Res> {
    /// The manager's name.
    pub fn name(&self) -> &str {
        self.balance.name()
    }

    /// The registry the manager builds from.
    pub fn registry(&self) -> &Arc<ProviderRegistry<Req, Res>> {
        &self.inner.registry
    }

    /// The selected provider: its name and a clone of its service. Calls on the service go to
    /// the provider directly (not through the manager's stats and outlier detection: call the
    /// manager as a `Service` for those).
    ///
    /// # Errors
    ///
    /// [`ProviderError::NoneAvailable`], or [`ProviderError::Closed`].
    pub fn get(&self) -> Result<Picked<Req, Res>, ProviderError> {
        if lock(&self.inner.state).closed.is_some() {
            return Err(ProviderError::Closed);
        }
        let hint = self.inner.default.load().as_ref().map(|name| Hint {
            key: None,
            preferred: vec![String::clone(name)],
        });
        self.balance
            .pick(hint.as_ref())
            .map_err(|_| ProviderError::NoneAvailable)
    }

    /// The provider named `name`, available or not.
    ///
    /// # Errors
    ///
    /// [`ProviderError::NotFound`] if no provider of that name is initialized.
    pub fn get_by_name(&self, name: &str) -> Result<BoxProvider<Req, Res>, ProviderError> {
        let mine = lock(&self.inner.state).order.iter().any(|e| e.name == name);
        mine.then(|| self.inner.registry.instance(name))
            .flatten()
            .ok_or_else(|| ProviderError::NotFound(name.to_owned()))
    }

    /// Makes `name` the default provider: picked first, whatever the selection, while it is
    /// available.
    ///
    /// # Errors
    ///
    /// [`ProviderError::NotFound`] if no provider of that name is initialized.
    pub fn set_default(&self, name: &str) -> Result<(), ProviderError> {
        if !lock(&self.inner.state).order.iter().any(|e| e.name == name) {
            return Err(ProviderError::NotFound(name.to_owned()));
        }
        self.inner.default.store(Some(Arc::new(name.to_owned())));
        Ok(())
    }

    /// The default provider's name, if one was set.
    pub fn default_provider(&self) -> Option<String> {
        self.inner.default.load().as_ref().map(|n| String::clone(n))
    }

    /// The initialized providers, in initialization order.
    pub fn names(&self) -> Vec<String> {
        lock(&self.inner.state)
            .order
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// The providers available now, in initialization order: healthy enough (not
    /// `Unhealthy` or `Offline`), not ejected, and ready (their `poll_ready` not pending).
    pub fn available(&self) -> Vec<String> {
        self.balance
            .stats()
            .into_iter()
            .filter(|s| s.health.is_eligible() && !s.ejected && s.ready)
            .map(|s| s.name)
            .collect()
    }

    /// Sets a provider's health by hand (`Unhealthy` and `Offline` providers are not picked;
    /// `Offline` set by hand sticks against passing health checks until another state is
    /// set).
    ///
    /// # Errors
    ///
    /// [`ProviderError::NotFound`].
    pub fn set_health(&self, name: &str, health: Health) -> Result<(), ProviderError> {
        self.balance
            .set_health(name, health)
            .map_err(|_| ProviderError::NotFound(name.to_owned()))
    }

    /// Every provider's health and the overall one (the worst-case rule).
    pub fn health_report(&self) -> HealthReport {
        self.balance.health_report()
    }

    /// Each provider's stats (calls made through the manager as a `Service`).
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.balance.stats()
    }
}

impl<Req, Res> Manager<Req, Res> {
    /// The next provider `close_all` closes (the lock is released before it closes).
    fn next_to_close(&self) -> Option<Entry> {
        lock(&self.inner.state).closing.pop()
    }
}

/// Runs one close hook within `deadline`, a panic counting as a failure.
async fn close_one(name: &str, close: &Hook, deadline: Duration) -> Result<(), BoxError> {
    match tokio::time::timeout(deadline, AssertUnwindSafe(close()).catch_unwind()).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            Err(format!("close of {name} panicked: {}", panic_message(&*panic)).into())
        }
        Err(_) => Err(Box::new(CloseTimedOut { after: deadline })),
    }
}

// === impl Service for Manager ===

impl<Req, Res> Service<Req> for Manager<Req, Res>
where
    Req: 'static,
    Res: 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = BalanceFuture<Req, Res, switchyard_core::ErrorsAsFailures>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.balance.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.balance.call(req)
    }
}
