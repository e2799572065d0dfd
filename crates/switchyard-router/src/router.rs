//! The router: a lock-free snapshot of built routes, rebuilt route by route on reload.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use serde::Serialize;
use switchyard_breaker::State as BreakerState;
use switchyard_core::ConfigError;
use switchyard_resilience::{FallbackLayer, ResilienceLayer, StackHandles};
use tokio::task::JoinHandle;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::config::RouteConfig;
use crate::error::{FactoryFailed, InvalidConfig, NoFactory, ServiceNotFound, SourceError};
use crate::http::HttpTransport;
use crate::source::{RouteRow, RouteSource};
use crate::sqlite::valid_service_name;
use crate::transport::{CatchPanic, RouteService, RouteSpec, TransportFactory, panicked};

/// How long a watcher waits before trying a failed reload (or a failed change check) again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The strategy that serves a route from the service registered with
/// [`Router::register_local`].
pub const LOCAL: &str = "local";
/// The strategy that answers every call at once with an empty response, calling nothing: the
/// switch that turns a service off.
pub const NOOP: &str = "noop";

/// Why a route cannot be served: the error each of its calls gets.
#[derive(Debug, Clone)]
enum Broken {
    NotFound(ServiceNotFound),
    NoFactory(NoFactory),
    FactoryFailed(FactoryFailed),
    InvalidConfig(InvalidConfig),
}

impl Broken {
    fn to_error(&self) -> BoxError {
        match self {
            Self::NotFound(e) => Box::new(e.clone()),
            Self::NoFactory(e) => Box::new(e.clone()),
            Self::FactoryFailed(e) => Box::new(e.clone()),
            Self::InvalidConfig(e) => Box::new(e.clone()),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::NotFound(e) => format!("strategy local, but {e}"),
            Self::NoFactory(e) => e.to_string(),
            Self::FactoryFailed(e) => e.to_string(),
            Self::InvalidConfig(e) => e.to_string(),
        }
    }
}

enum Target<Req, Res> {
    Noop,
    Call(RouteService<Req, Res>),
    Broken(Broken),
}

/// Per-route metric handles, made once per build so a call touches no registry.
struct RouteMetrics {
    service: Arc<str>,
    strategy: Arc<str>,
    ok: Counter,
    duration: Histogram,
    /// The last failed call's error and its time (unix seconds); written on failures only.
    last_error: Mutex<Option<(String, u64)>>,
}

impl RouteMetrics {
    fn new(service: &Arc<str>, strategy: &Arc<str>) -> Self {
        let labels = [
            ("service", service.to_string()),
            ("strategy", strategy.to_string()),
        ];
        Self {
            service: Arc::clone(service),
            strategy: Arc::clone(strategy),
            ok: metrics::counter!(
                "switchyard_router_calls_total",
                &[&labels[..], &[("outcome", "ok".to_owned())]].concat()
            ),
            duration: metrics::histogram!("switchyard_router_call_duration_seconds", &labels),
            last_error: Mutex::new(None),
        }
    }

    fn last_error(&self) -> Option<(String, u64)> {
        lock(&self.last_error).clone()
    }

    fn failed(&self, outcome: &'static str) {
        metrics::counter!(
            "switchyard_router_calls_total",
            "service" => self.service.to_string(),
            "strategy" => self.strategy.to_string(),
            "outcome" => outcome,
        )
        .increment(1);
    }

    fn record(&self, result: Result<(), &BoxError>, started: quanta::Instant) {
        self.duration
            .record(wall_clock().duration_since(started).as_secs_f64());
        match result {
            Ok(()) => self.ok.increment(1),
            Err(e) => {
                self.failed(outcome(e));
                *lock(&self.last_error) = Some((e.to_string(), unix_now()));
            }
        }
    }
}

/// The clock of call-duration metrics: quanta's (the TSC where it is reliable), which reads in
/// a few nanoseconds where `clock_gettime` costs tens, twice per call. It decides nothing, so
/// paused-time tests do not need to control it.
fn wall_clock() -> quanta::Instant {
    quanta::Instant::now()
}

/// A failed call's `outcome` label: its rejection kind, or `error`.
fn outcome(error: &BoxError) -> &'static str {
    switchyard_core::find_rejection(&**error).map_or("error", |r| r.kind().as_str())
}

/// One built route.
struct Entry<Req, Res> {
    name: Arc<str>,
    strategy: Arc<str>,
    endpoint: Option<String>,
    config: Option<String>,
    updated_at: i64,
    /// The local services this build used (as primary or fallback) and their generations.
    locals_used: Vec<(Arc<str>, u64)>,
    target: Target<Req, Res>,
    handles: Option<StackHandles>,
    metrics: Arc<RouteMetrics>,
}

impl<Req, Res> Entry<Req, Res> {
    fn same_row(&self, row: &RouteRow) -> bool {
        *self.strategy == *row.strategy
            && self.endpoint == row.endpoint
            && self.config == row.config
    }

    fn error(&self) -> Option<String> {
        match &self.target {
            Target::Broken(b) => Some(b.message()),
            _ => None,
        }
    }
}

/// The snapshot's maps hash with foldhash (seeded per map): their keys come from the routes
/// table, never from callers, and a lookup is most of a dispatch.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct Table<Req, Res> {
    /// Built from route rows.
    routes: FastMap<Arc<str>, Arc<Entry<Req, Res>>>,
    /// Local services with no row: served as `local`, with no stack.
    locals: FastMap<Arc<str>, Arc<Entry<Req, Res>>>,
    /// The names of every registered local service (routed or not), so snapshots of services
    /// need no lock.
    local_names: std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl<Req, Res> Default for Table<Req, Res> {
    fn default() -> Self {
        Self {
            routes: FastMap::default(),
            locals: FastMap::default(),
            local_names: Default::default(),
        }
    }
}

/// Builds the service of a local route with an empty config around a local service of a
/// concrete type, boxed once (each boxed layer costs a clone and a future allocation per call).
type MakePlain<Req, Res> = Arc<dyn Fn(&Arc<RouteMetrics>) -> RouteService<Req, Res> + Send + Sync>;

struct Local<Req, Res> {
    /// The service (panics caught), boxed: the base of stacked routes and fallbacks.
    service: RouteService<Req, Res>,
    /// The service observed, for routes with no stack: the hot path.
    plain: MakePlain<Req, Res>,
    generation: u64,
}

/// What reloads and registrations share, behind one lock (never taken by a call).
struct State<Req, Res> {
    locals: HashMap<Arc<str>, Local<Req, Res>>,
    generation: u64,
    /// The rows the table was last built from, to rebuild when a local service changes.
    rows: Vec<RouteRow>,
}

struct Inner<Req, Res> {
    table: ArcSwap<Table<Req, Res>>,
    transports: RwLock<HashMap<String, Arc<dyn TransportFactory<Req, Res>>>>,
    state: Mutex<State<Req, Res>>,
    status: Mutex<StatusInner>,
    /// Serialises `reload_from`: a load and its rebuild apply in the order loads happened.
    reloading: tokio::sync::Mutex<()>,
    /// Counts reloads, for [`Router::reloads`].
    reloads: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct StatusInner {
    last_reload: Option<ReloadReport>,
    last_error: Option<(String, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Routes new in this snapshot.
    pub added: usize,
    /// Routes whose strategy, endpoint or config changed (or whose local service was
    /// replaced), rebuilt.
    pub changed: usize,
    /// Routes kept as they were: same service, same connections, same breaker state.
    pub unchanged: usize,
    /// Routes gone from the snapshot; their services close once in-flight calls finish.
    pub removed: usize,
    /// Routes in the snapshot that cannot be served (each call gets its typed error).
    pub broken: usize,
    /// How long the rebuild took (the source's read not included).
    #[serde(with = "switchyard_core::duration")]
    pub duration: Duration,
}

/// A snapshot of one service as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// The strategy serving it (`local` for a local service with no row).
    pub strategy: String,
    /// The row's endpoint, with any user information and query string masked (`***`).
    pub endpoint: Option<String>,
    /// Whether a local service is registered under this name.
    pub has_local: bool,
    /// Whether the service has a row (or is served only as a registered local service).
    pub has_route: bool,
    /// The route's circuit breaker state, when its config has a breaker.
    pub breaker: Option<BreakerState>,
    /// Why the route cannot be served, when it cannot.
    pub error: Option<String>,
    /// The error of the last call that failed, if any did since the route was built.
    pub last_call_error: Option<String>,
    /// Unix seconds of `last_call_error`.
    pub last_call_error_at: Option<u64>,
    /// Unix seconds of the row's last change.
    pub updated_at: i64,
}

/// The router's health, for status pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterStatus {
    /// Routes from rows.
    pub routes: usize,
    /// Local services with no row.
    pub local_only: usize,
    /// Routes that cannot be served.
    pub broken: usize,
    /// The last successful reload.
    pub last_reload: Option<ReloadReport>,
    /// The last error reading the source (the router keeps serving its last good snapshot),
    /// cleared by the next successful reload.
    pub last_error: Option<String>,
    /// Unix seconds of `last_error`.
    pub last_error_at: Option<u64>,
}

/// Dispatches calls by service name, to an in-process service or a remote transport, as a
/// routes table says — and lets the table change while calls run.
///
/// The seed's "job as library": code as a monolith (register each service in-process with
/// [`register_local`](Self::register_local)), deploy as microservices (a row with strategy
/// `http` sends that service's calls to another process), and switch between the two by
/// changing one row. Dispatch order for a name, as in the seed:
///
/// 1. a row with strategy `noop` answers at once with `Res::default()`;
/// 2. a row with a remote strategy calls that route's transport service;
/// 3. a row with strategy `local`, or no row, calls the local service;
/// 4. otherwise [`ServiceNotFound`].
///
/// Each route is built once per change of its row: the transport (or local) service, wrapped
/// in the [`ResilienceLayer`] its config describes, with panics caught ([`Panic`]) and call
/// metrics. Built routes live in an [`ArcSwap`] snapshot: a call takes no lock and never waits
/// for the database; a reload swaps in a new snapshot that reuses every unchanged route.
///
/// `Router` is a `Service<(name, Req)>` (the name is any `AsRef<str>`) and cheap to clone:
/// clones share everything. It is always ready; each call readies its route's service.
///
/// [`Panic`]: crate::Panic
pub struct Router<Req = Bytes, Res = Bytes> {
    inner: Arc<Inner<Req, Res>>,
}

impl<Req, Res> Clone for Router<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<Req, Res> fmt::Debug for Router<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.inner.table.load();
        f.debug_struct("Router")
            .field("routes", &table.routes.len())
            .field("local_only", &table.locals.len())
            .finish_non_exhaustive()
    }
}

impl Router<Bytes, Bytes> {
    /// A router over byte payloads with the built-in `http` transport ([`HttpTransport`], SSRF
    /// guard on) and, with the `grpc` feature, the `grpc` transport (`GrpcTransport`, likewise). Register it again with [`HttpTransport::allow_internal`] to call services on
    /// this machine or network.
    pub fn new() -> Self {
        let router = Self::empty();
        router.register_transport("http", HttpTransport::new());
        #[cfg(feature = "grpc")]
        router.register_transport("grpc", crate::GrpcTransport::new());
        router
    }
}

impl Default for Router<Bytes, Bytes> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req, Res> Router<Req, Res>
where
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
    /// A router with no routes, no local services and no transports but the built-in
    /// strategies `local` and `noop`.
    pub fn empty() -> Self {
        crate::error::register_all();
        Self {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(Table::default()),
                transports: RwLock::new(HashMap::new()),
                state: Mutex::new(State {
                    locals: HashMap::new(),
                    generation: 0,
                    rows: Vec::new(),
                }),
                status: Mutex::new(StatusInner::default()),
                reloading: tokio::sync::Mutex::new(()),
                reloads: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Registers (or replaces) the in-process service for `name`. Any tower service will do —
    /// a closure through [`service_fn`](tower::service_fn) included. Routes that use it are
    /// rebuilt at once; calls in flight on the old one finish on it.
    pub fn register_local<S>(&self, name: impl Into<Arc<str>>, service: S)
    where
        S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let name = name.into();
        let plain: MakePlain<Req, Res> = {
            let service = service.clone();
            Arc::new(move |metrics: &Arc<RouteMetrics>| {
                BoxCloneSyncService::new(Observe {
                    inner: service.clone(),
                    metrics: Arc::clone(metrics),
                })
            })
        };
        let service = CatchPanic::new(service, Arc::clone(&name));
        let mut state = lock(&self.inner.state);
        state.generation += 1;
        let generation = state.generation;
        state.locals.insert(
            name,
            Local {
                service: BoxCloneSyncService::new(service),
                plain,
                generation,
            },
        );
        let rows = state.rows.clone();
        self.rebuild(&mut state, rows, false);
    }

    /// Registers (or replaces) the transport factory for `strategy`. Routes already loaded
    /// are not rebuilt until their row changes or a reload finds them broken.
    ///
    /// # Panics
    ///
    /// If `strategy` is `local` or `noop`, which are built in.
    pub fn register_transport(
        &self,
        strategy: impl Into<String>,
        factory: impl TransportFactory<Req, Res>,
    ) {
        let strategy = strategy.into();
        assert!(
            strategy != LOCAL && strategy != NOOP,
            "`{strategy}` is a built-in strategy"
        );
        self.inner
            .transports
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(strategy, Arc::new(factory));
    }

    /// Rebuilds the snapshot from `rows`: routes whose strategy, endpoint and config are the
    /// same as before are kept as they are (their connections and breaker state with them),
    /// the others are built, and routes missing from `rows` are dropped (in-flight calls
    /// finish on them). A broken row breaks only its own route. Broken routes are rebuilt on
    /// every reload, so a transport registered since, or a fixed endpoint, takes effect.
    ///
    /// Runs transport factories on the calling thread; async callers use
    /// [`reload_from`](Self::reload_from), which rebuilds on the blocking pool.
    pub fn reload(&self, rows: Vec<RouteRow>) -> ReloadReport {
        let mut state = lock(&self.inner.state);
        self.rebuild(&mut state, rows, true)
    }

    /// Reads `source` and [`reload`](Self::reload)s from it, the rebuild (which runs transport
    /// factories) on tokio's blocking pool. A read error keeps the current snapshot and is kept
    /// in [`status`](Self::status) until the next successful reload.
    ///
    /// # Errors
    ///
    /// The source could not be read.
    pub async fn reload_from<S: RouteSource>(
        &self,
        source: &S,
    ) -> Result<ReloadReport, SourceError> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let result = match source.load().await {
            Ok(rows) => {
                let router = self.clone();
                tokio::task::spawn_blocking(move || router.reload(rows))
                    .await
                    .map_err(|e| SourceError::new("the route rebuild failed", e))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::warn!(target: "switchyard_router", error = %e, "route reload failed; keeping the last snapshot");
            metrics::counter!("switchyard_router_reload_errors_total").increment(1);
            lock(&self.inner.status).last_error = Some((e.to_string(), unix_now()));
        }
        result
    }

    /// Reloads from `source` whenever it reports a change, until the handle is dropped or
    /// stopped. Call [`reload_from`](Self::reload_from) once first so the router serves the
    /// table from its first call; the watcher then follows changes.
    ///
    /// A reload that fails (a locked or unreadable database) is retried every
    /// [`RETRY_INTERVAL`] until one succeeds, the last good snapshot serving meanwhile: the
    /// change that triggered it is not lost.
    ///
    /// Must be called within a tokio runtime.
    pub fn watch<S: RouteSource>(&self, source: S) -> WatchHandle
    where
        Req: Sync,
        Res: Sync,
    {
        let router = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match source.changed().await {
                    Ok(()) => {
                        while router.reload_from(&source).await.is_err() {
                            tokio::time::sleep(RETRY_INTERVAL).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "switchyard_router", error = %e, "route watch failed; retrying");
                        lock(&router.inner.status).last_error = Some((e.to_string(), unix_now()));
                        tokio::time::sleep(RETRY_INTERVAL).await;
                    }
                }
            }
        });
        WatchHandle { task }
    }

    /// Builds and swaps in a new snapshot; `reload` says whether new rows came in (or only a
    /// local service changed, which is not reported as a reload).
    fn rebuild(
        &self,
        state: &mut State<Req, Res>,
        rows: Vec<RouteRow>,
        reload: bool,
    ) -> ReloadReport {
        let started = Instant::now();
        let old = self.inner.table.load_full();
        let mut report = ReloadReport::default();
        let mut routes = FastMap::with_capacity_and_hasher(rows.len(), Default::default());
        for row in &rows {
            let previous = old.routes.get(row.service_name.as_str());
            let entry = match previous {
                Some(entry)
                    if entry.same_row(row)
                        && !matches!(entry.target, Target::Broken(_))
                        && locals_current(state, &entry.locals_used) =>
                {
                    report.unchanged += 1;
                    Arc::clone(entry)
                }
                // A broken route is built again with the same row (a transport or local service
                // may have appeared since); it counts as changed only if it came back.
                Some(entry) if entry.same_row(row) && matches!(entry.target, Target::Broken(_)) => {
                    let rebuilt = Arc::new(self.build(state, row));
                    if rebuilt.error().is_some() {
                        report.unchanged += 1;
                    } else {
                        report.changed += 1;
                    }
                    rebuilt
                }
                Some(_) => {
                    report.changed += 1;
                    Arc::new(self.build(state, row))
                }
                None => {
                    report.added += 1;
                    Arc::new(self.build(state, row))
                }
            };
            if let Some(error) = entry.error() {
                report.broken += 1;
                // Said once per new error, not on every reload while the row stays broken.
                if previous.and_then(|p| p.error()).as_ref() != Some(&error) {
                    tracing::warn!(target: "switchyard_router", service = %entry.name, %error, "route broken");
                }
            }
            routes.insert(Arc::clone(&entry.name), entry);
        }
        report.removed = old
            .routes
            .keys()
            .filter(|k| !routes.contains_key(*k))
            .count();
        let mut locals = FastMap::default();
        for (name, local) in &state.locals {
            if routes.contains_key(name) {
                continue;
            }
            let entry = match old.locals.get(name) {
                Some(entry) if locals_current(state, &entry.locals_used) => Arc::clone(entry),
                _ => Arc::new(local_entry(name, local)),
            };
            locals.insert(Arc::clone(name), entry);
        }
        let local_names = state.locals.keys().cloned().collect();
        self.inner.table.store(Arc::new(Table {
            routes,
            locals,
            local_names,
        }));
        state.rows = rows;
        report.duration = started.elapsed();
        metrics::gauge!("switchyard_router_routes").set(state.rows.len() as f64);
        metrics::gauge!("switchyard_router_routes_broken").set(report.broken as f64);
        if !reload {
            tracing::debug!(
                target: "switchyard_router",
                changed = report.changed,
                "routes rebuilt for a new local service"
            );
            self.inner.reloads.send_modify(|n| *n += 1);
            return report;
        }
        tracing::info!(
            target: "switchyard_router",
            added = report.added,
            changed = report.changed,
            unchanged = report.unchanged,
            removed = report.removed,
            broken = report.broken,
            duration_us = report.duration.as_micros() as u64,
            "routes reloaded"
        );
        metrics::counter!("switchyard_router_reloads_total").increment(1);
        metrics::histogram!("switchyard_router_reload_duration_seconds")
            .record(report.duration.as_secs_f64());
        let mut status = lock(&self.inner.status);
        status.last_reload = Some(report.clone());
        status.last_error = None;
        drop(status);
        self.inner.reloads.send_modify(|n| *n += 1);
        report
    }

    /// A receiver that sees the number of snapshots built so far (reloads, and rebuilds after
    /// [`register_local`](Self::register_local)) and is woken at each new one.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reloads.subscribe()
    }

    fn build(&self, state: &State<Req, Res>, row: &RouteRow) -> Entry<Req, Res> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.build_entry(state, row))) {
            Ok(entry) => entry,
            Err(_) => {
                let name: Arc<str> = row.service_name.as_str().into();
                let strategy: Arc<str> = row.strategy.as_str().into();
                Entry {
                    metrics: Arc::new(RouteMetrics::new(&name, &strategy)),
                    target: Target::Broken(Broken::FactoryFailed(FactoryFailed::new(
                        Arc::clone(&name),
                        Arc::clone(&strategy),
                        Arc::from(BoxError::from("building the route panicked")),
                    ))),
                    name,
                    strategy,
                    endpoint: row.endpoint.clone(),
                    config: row.config.clone(),
                    updated_at: row.updated_at,
                    locals_used: Vec::new(),
                    handles: None,
                }
            }
        }
    }

    fn build_entry(&self, state: &State<Req, Res>, row: &RouteRow) -> Entry<Req, Res> {
        let name: Arc<str> = row.service_name.as_str().into();
        let strategy: Arc<str> = row.strategy.as_str().into();
        let mut entry = Entry {
            metrics: Arc::new(RouteMetrics::new(&name, &strategy)),
            name: Arc::clone(&name),
            strategy: Arc::clone(&strategy),
            endpoint: row.endpoint.clone(),
            config: row.config.clone(),
            updated_at: row.updated_at,
            locals_used: Vec::new(),
            target: Target::Noop,
            handles: None,
        };
        match self.build_target(state, row, &name, &strategy, &mut entry) {
            Ok(target) => entry.target = target,
            Err(broken) => entry.target = Target::Broken(broken),
        }
        entry
    }

    fn build_target(
        &self,
        state: &State<Req, Res>,
        row: &RouteRow,
        name: &Arc<str>,
        strategy: &Arc<str>,
        entry: &mut Entry<Req, Res>,
    ) -> Result<Target<Req, Res>, Broken> {
        let invalid =
            |e: ConfigError| Broken::InvalidConfig(InvalidConfig::new(Arc::clone(name), e));
        if !valid_service_name(name) {
            return Err(invalid(ConfigError::new(
                "service_name",
                "use 1 to 128 characters from [A-Za-z0-9._-]",
            )));
        }
        if **strategy == *NOOP {
            return Ok(Target::Noop);
        }
        let config =
            RouteConfig::parse(row.config.as_deref().unwrap_or_default()).map_err(invalid)?;
        let base = if **strategy == *LOCAL {
            let local = state
                .locals
                .get(name)
                .ok_or_else(|| Broken::NotFound(ServiceNotFound::new(Arc::clone(name))))?;
            entry.locals_used.push((Arc::clone(name), local.generation));
            if config.resilience.is_empty() {
                return Ok(Target::Call((local.plain)(&entry.metrics)));
            }
            local.service.clone()
        } else {
            let factory = self
                .inner
                .transports
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&**strategy)
                .cloned()
                .ok_or_else(|| {
                    Broken::NoFactory(NoFactory::new(Arc::clone(name), Arc::clone(strategy)))
                })?;
            let spec = RouteSpec {
                service: name,
                strategy,
                endpoint: row.endpoint.as_deref(),
                options: &config.transport,
            };
            let built = std::panic::catch_unwind(AssertUnwindSafe(|| factory.build(&spec)))
                .unwrap_or_else(|_| Err("the transport factory panicked".into()))
                .map_err(|e| {
                    Broken::FactoryFailed(FactoryFailed::new(
                        Arc::clone(name),
                        Arc::clone(strategy),
                        Arc::from(e),
                    ))
                })?;
            BoxCloneSyncService::new(CatchPanic::new(built, Arc::clone(name)))
        };
        if config.resilience.is_empty() {
            return Ok(Target::Call(observed(base, &entry.metrics)));
        }
        let layer = ResilienceLayer::new(Arc::clone(name), &config.resilience).map_err(invalid)?;
        entry.handles = Some(layer.handles());
        let stacked = layer.layer(base);
        let service = match layer.fallback() {
            None => BoxCloneSyncService::new(stacked),
            Some(fallback) => {
                let local = state.locals.get(fallback).ok_or_else(|| {
                    invalid(ConfigError::new(
                        "fallback",
                        format!("no local service named {fallback:?}"),
                    ))
                })?;
                entry.locals_used.push((fallback.into(), local.generation));
                BoxCloneSyncService::new(
                    FallbackLayer::new(Arc::clone(name), local.service.clone()).layer(stacked),
                )
            }
        };
        Ok(Target::Call(observed(service, &entry.metrics)))
    }

    /// The route a call for `name` would take now, as a service of its own (for callers that
    /// want to know the strategy before calling, like a gateway answering `noop` with 204).
    ///
    /// # Errors
    ///
    /// [`ServiceNotFound`] when no row and no local service has this name.
    pub fn route(&self, name: &str) -> Result<Route<Req, Res>, ServiceNotFound> {
        let table = self.inner.table.load();
        table
            .routes
            .get(name)
            .or_else(|| table.locals.get(name))
            .map(|entry| Route {
                entry: Arc::clone(entry),
            })
            .ok_or_else(|| {
                metrics::counter!("switchyard_router_not_found_total").increment(1);
                ServiceNotFound::new(name)
            })
    }

    /// A snapshot of one service: its strategy, endpoint, breaker state and error.
    pub fn inspect(&self, name: &str) -> Option<ServiceInfo> {
        let table = self.inner.table.load();
        let has_local = table.local_names.contains(name);
        table
            .routes
            .get(name)
            .map(|e| info(e, has_local, true))
            .or_else(|| table.locals.get(name).map(|e| info(e, true, false)))
    }

    /// Snapshots of every service, by name.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let table = self.inner.table.load();
        let mut all: Vec<ServiceInfo> = table
            .routes
            .values()
            .map(|e| info(e, table.local_names.contains(&e.name), true))
            .chain(table.locals.values().map(|e| info(e, true, false)))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The router's health: route counts, the last reload, the last source error.
    pub fn status(&self) -> RouterStatus {
        let table = self.inner.table.load();
        let status = lock(&self.inner.status);
        RouterStatus {
            routes: table.routes.len(),
            local_only: table.locals.len(),
            broken: table
                .routes
                .values()
                .filter(|e| matches!(e.target, Target::Broken(_)))
                .count(),
            last_reload: status.last_reload.clone(),
            last_error: status.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: status.last_error.as_ref().map(|(_, at)| *at),
        }
    }

    /// A layer that makes one named service switchable: it registers the wrapped service as
    /// the local service `name`, and the service it returns dispatches through this router, so
    /// the routes table decides whether calls run in-process, go remote, or are switched off.
    pub fn layer_for(&self, name: impl Into<Arc<str>>) -> RouteLayer<Req, Res> {
        RouteLayer {
            router: self.clone(),
            name: name.into(),
        }
    }
}

impl<Req, Res: Default> Router<Req, Res> {
    /// Calls the service `name` with `req`: the same as calling the router as a
    /// `Service<(name, Req)>`, without readying it first (the router is always ready).
    pub fn dispatch(&self, name: &str, req: Req) -> RouteFuture<Req, Res> {
        let table = self.inner.table.load();
        match table.routes.get(name).or_else(|| table.locals.get(name)) {
            Some(entry) => dispatch(entry, req),
            None => {
                metrics::counter!("switchyard_router_not_found_total").increment(1);
                RouteFuture::ready(Err(Box::new(ServiceNotFound::new(name))))
            }
        }
    }
}

fn locals_current<Req, Res>(state: &State<Req, Res>, used: &[(Arc<str>, u64)]) -> bool {
    used.iter().all(|(name, generation)| {
        state
            .locals
            .get(name)
            .is_some_and(|l| l.generation == *generation)
    })
}

fn local_entry<Req, Res>(name: &Arc<str>, local: &Local<Req, Res>) -> Entry<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    let strategy: Arc<str> = LOCAL.into();
    let metrics = Arc::new(RouteMetrics::new(name, &strategy));
    Entry {
        target: Target::Call((local.plain)(&metrics)),
        metrics,
        name: Arc::clone(name),
        strategy,
        endpoint: None,
        config: None,
        updated_at: 0,
        locals_used: vec![(Arc::clone(name), local.generation)],
        handles: None,
    }
}

fn info<Req, Res>(entry: &Entry<Req, Res>, has_local: bool, has_route: bool) -> ServiceInfo {
    ServiceInfo {
        name: entry.name.to_string(),
        strategy: entry.strategy.to_string(),
        endpoint: entry.endpoint.as_deref().map(redact),
        has_local,
        has_route,
        breaker: entry
            .handles
            .as_ref()
            .and_then(|h| h.breaker.as_ref())
            .map(switchyard_breaker::BreakerHandle::state),
        error: entry.error(),
        last_call_error: entry.metrics.last_error().map(|(e, _)| e),
        last_call_error_at: entry.metrics.last_error().map(|(_, at)| at),
        updated_at: entry.updated_at,
    }
}

/// An endpoint as status pages show it: without user information or query string, which may
/// hold credentials.
fn redact(endpoint: &str) -> String {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return "(unparsable)".to_owned();
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return uri.path().to_owned();
    };
    if !authority.as_str().contains('@') && uri.query().is_none() {
        return endpoint.to_owned();
    }
    let host = authority.as_str().rsplit('@').next().unwrap_or_default();
    let user = if authority.as_str().contains('@') {
        "***@"
    } else {
        ""
    };
    let query = if uri.query().is_some() { "?***" } else { "" };
    format!("{scheme}://{user}{host}{}{query}", uri.path())
}

fn observed<Req, Res>(
    service: RouteService<Req, Res>,
    metrics: &Arc<RouteMetrics>,
) -> RouteService<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    BoxCloneSyncService::new(Observe {
        inner: service,
        metrics: Arc::clone(metrics),
    })
}

/// Records each call's outcome and duration under the route's labels, and catches panics of
/// the service it wraps (so a route with no stack needs no second wrapper).
#[derive(Clone)]
struct Observe<S> {
    inner: S,
    metrics: Arc<RouteMetrics>,
}

impl<S, Req> Service<Req> for Observe<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.poll_ready(cx))) {
            Ok(ready) => ready.map_err(Into::into),
            Err(payload) => Poll::Ready(Err(panicked(&self.metrics.service, &*payload))),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let started = wall_clock();
        let state = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => ObserveState::Running { future },
            Err(payload) => ObserveState::Panicked {
                error: Some(panicked(&self.metrics.service, &*payload)),
            },
        };
        ObserveFuture {
            state,
            metrics: Arc::clone(&self.metrics),
            started,
        }
    }
}

pin_project! {
    struct ObserveFuture<F> {
        #[pin]
        state: ObserveState<F>,
        metrics: Arc<RouteMetrics>,
        started: quanta::Instant,
    }
}

pin_project! {
    #[project = ObserveStateProj]
    enum ObserveState<F> {
        Running { #[pin] future: F },
        Panicked { error: Option<BoxError> },
    }
}

impl<F, T, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            ObserveStateProj::Running { future } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => result.map_err(Into::into),
                    Err(payload) => Err(panicked(&this.metrics.service, &*payload)),
                }
            }
            ObserveStateProj::Panicked { error } => {
                Err(error.take().expect("ObserveFuture polled after completion"))
            }
        };
        this.metrics
            .record(result.as_ref().map(|_| ()), *this.started);
        Poll::Ready(result)
    }
}

/// A handle on a [`Router::watch`] task; dropping it stops the watcher.
#[derive(Debug)]
pub struct WatchHandle {
    task: JoinHandle<()>,
}

impl WatchHandle {
    /// Stops the watcher (the router keeps its current snapshot).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The route one name resolved to, taken from one snapshot: a service of its own.
pub struct Route<Req, Res> {
    entry: Arc<Entry<Req, Res>>,
}

impl<Req, Res> Clone for Route<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            entry: Arc::clone(&self.entry),
        }
    }
}

impl<Req, Res> fmt::Debug for Route<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("service", &self.entry.name)
            .field("strategy", &self.entry.strategy)
            .finish_non_exhaustive()
    }
}

impl<Req, Res> Route<Req, Res> {
    /// The service's name.
    pub fn service(&self) -> &str {
        &self.entry.name
    }

    /// The strategy serving it.
    pub fn strategy(&self) -> &str {
        &self.entry.strategy
    }

    /// Whether calls are switched off (`noop`): they answer `Res::default()` and call nothing.
    pub fn is_noop(&self) -> bool {
        matches!(self.entry.target, Target::Noop)
    }

    /// Why the route cannot be served, if it cannot.
    pub fn error(&self) -> Option<String> {
        self.entry.error()
    }
}

impl<Req, Res: Default> Service<Req> for Route<Req, Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = RouteFuture<Req, Res>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        dispatch(&self.entry, req)
    }
}

fn dispatch<Req, Res: Default>(entry: &Entry<Req, Res>, req: Req) -> RouteFuture<Req, Res> {
    match &entry.target {
        Target::Call(service) => RouteFuture::call(service.clone().oneshot(req)),
        Target::Noop => {
            entry.metrics.ok.increment(1);
            RouteFuture::ready(Ok(Res::default()))
        }
        Target::Broken(broken) => {
            let error = broken.to_error();
            entry.metrics.failed(outcome(&error));
            RouteFuture::ready(Err(error))
        }
    }
}

pin_project! {
    /// The response future of a routed call.
    pub struct RouteFuture<Req, Res> {
        #[pin]
        state: RouteState<Req, Res>,
    }
}

pin_project! {
    #[project = RouteStateProj]
    enum RouteState<Req, Res> {
        // The route's service is being readied and called.
        Call { #[pin] future: Oneshot<RouteService<Req, Res>, Req> },
        // Answered without calling anything (noop, broken route, unknown name).
        Ready { result: Option<Result<Res, BoxError>> },
    }
}

impl<Req, Res> RouteFuture<Req, Res> {
    fn call(future: Oneshot<RouteService<Req, Res>, Req>) -> Self {
        Self {
            state: RouteState::Call { future },
        }
    }

    fn ready(result: Result<Res, BoxError>) -> Self {
        Self {
            state: RouteState::Ready {
                result: Some(result),
            },
        }
    }
}

impl<Req, Res> fmt::Debug for RouteFuture<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            RouteState::Call { .. } => "RouteFuture::Call",
            RouteState::Ready { .. } => "RouteFuture::Ready",
        })
    }
}

impl<Req, Res> Future for RouteFuture<Req, Res> {
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RouteStateProj::Call { future } => future.poll(cx),
            RouteStateProj::Ready { result } => {
                Poll::Ready(result.take().expect("RouteFuture polled after completion"))
            }
        }
    }
}

impl<N, Req, Res> Service<(N, Req)> for Router<Req, Res>
where
    N: AsRef<str>,
    Res: Default,
{
    type Response = Res;
    type Error = BoxError;
    type Future = RouteFuture<Req, Res>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (name, req): (N, Req)) -> Self::Future {
        self.dispatch(name.as_ref(), req)
    }
}

/// Makes one named service switchable; see [`Router::layer_for`].
pub struct RouteLayer<Req, Res> {
    router: Router<Req, Res>,
    name: Arc<str>,
}

impl<Req, Res> Clone for RouteLayer<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

impl<Req, Res> fmt::Debug for RouteLayer<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLayer")
            .field("name", &self.name)
            .finish()
    }
}

impl<S, Req, Res> Layer<S> for RouteLayer<Req, Res>
where
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
    type Service = Routed<Req, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        self.router.register_local(Arc::clone(&self.name), inner);
        Routed {
            router: self.router.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

/// The service a [`RouteLayer`] returns: calls the named service through the router.
pub struct Routed<Req, Res> {
    router: Router<Req, Res>,
    name: Arc<str>,
}

impl<Req, Res> Clone for Routed<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            name: Arc::clone(&self.name),
        }
    }
}

impl<Req, Res> fmt::Debug for Routed<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed").field("name", &self.name).finish()
    }
}

impl<Req, Res: Default> Service<Req> for Routed<Req, Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = RouteFuture<Req, Res>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.router.dispatch(&self.name, req)
    }
}
