//! The router: a lock-free snapshot of built routes, rebuilt route by route on reload.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use switchyard_core::sync::lock;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use crate::error::ServiceNotFound;
use crate::http::HttpTransport;
use crate::layer::RouteLayer;
use crate::observe::{Observe, RouteMetrics};
use crate::route::{Route, RouteFuture, dispatch};
use crate::source::RouteRow;
use crate::status::StatusInner;
use crate::table::{Local, MakePlain, Table};
use crate::transport::{CatchPanic, TransportFactory};

/// The strategy that serves a route from the service registered with
/// [`Router::register_local`].
pub const LOCAL: &str = "local";

/// The strategy that answers every call at once with an empty response, calling nothing: the
/// switch that turns a service off.
pub const NOOP: &str = "noop";

/// What reloads and registrations share, behind one lock (never taken by a call).
pub(crate) struct State<Req, Res> {
    pub(crate) locals: HashMap<Arc<str>, Local<Req, Res>>,
    pub(crate) generation: u64,
    /// The rows the table was last built from, to rebuild when a local service changes.
    pub(crate) rows: Vec<RouteRow>,
}

pub(crate) struct Inner<Req, Res> {
    pub(crate) table: ArcSwap<Table<Req, Res>>,
    pub(crate) transports: RwLock<HashMap<String, Arc<dyn TransportFactory<Req, Res>>>>,
    pub(crate) state: Mutex<State<Req, Res>>,
    pub(crate) status: Mutex<StatusInner>,
    /// Serialises `reload_from`: a load and its rebuild apply in the order loads happened.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Counts reloads, for [`Router::reloads`].
    pub(crate) reloads: tokio::sync::watch::Sender<u64>,
}

/// Dispatches calls by service name, to an in-process service or a remote transport, as a
/// routes table says — and lets the table change while calls run.
///
/// "Job as library": code as a monolith (register each service in-process with
/// [`register_local`](Self::register_local)), deploy as microservices (a row with strategy
/// `http` sends that service's calls to another process), and switch between the two by
/// changing one row. Dispatch order for a name:
///
/// 1. a row with strategy `noop` answers at once with `Res::default()`;
/// 2. a row with a remote strategy calls that route's transport service;
/// 3. a row with strategy `local`, or no row, calls the local service;
/// 4. otherwise [`ServiceNotFound`].
///
/// Each route is built once per change of its row: the transport (or local) service, wrapped in the
/// [`ResilienceLayer`](switchyard_resilience::ResilienceLayer) its config describes, with panics
/// caught ([`Panic`]) and call metrics. Built routes live in an [`ArcSwap`] snapshot: a call takes
/// no lock and never waits for the database; a reload swaps in a new snapshot that reuses every
/// unchanged route.
///
/// `Router` is a `Service<(name, Req)>` (the name is any `AsRef<str>`) and cheap to clone:
/// clones share everything. It is always ready; each call readies its route's service.
///
/// [`Panic`]: crate::Panic
pub struct Router<Req = Bytes, Res = Bytes> {
    pub(crate) inner: Arc<Inner<Req, Res>>,
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
    /// guard on) and, with the `grpc` feature, the `grpc` transport (`GrpcTransport`, likewise).
    /// Register it again with [`HttpTransport::allow_internal`] to call services on this machine or
    /// network.
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
                BoxCloneSyncService::new(Observe::new(service.clone(), metrics))
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
        switchyard_core::sync::write(&self.inner.transports).insert(strategy, Arc::new(factory));
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
