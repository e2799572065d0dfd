//! The route table: one snapshot of built routes, each an entry with its target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_core::sync::lock;
use switchyard_resilience::StackHandles;
use tower::BoxError;

use crate::diff::Built;
use crate::error::{FactoryFailed, InvalidConfig, NoFactory, ServiceNotFound};
use crate::files::CredentialFiles;
use crate::observe::RouteMetrics;
use crate::router::LOCAL;
use crate::source::RouteRow;
use crate::transport::RouteService;

/// Why a route cannot be served: the error each of its calls gets.
#[derive(Debug, Clone)]
pub(crate) enum Broken {
    NotFound(ServiceNotFound),
    NoFactory(NoFactory),
    FactoryFailed(FactoryFailed),
    InvalidConfig(InvalidConfig),
}

impl Broken {
    pub(crate) fn to_error(&self) -> BoxError {
        match self {
            Self::NotFound(e) => Box::new(e.clone()),
            Self::NoFactory(e) => Box::new(e.clone()),
            Self::FactoryFailed(e) => Box::new(e.clone()),
            Self::InvalidConfig(e) => Box::new(e.clone()),
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Self::NotFound(e) => format!("strategy local, but {e}"),
            Self::NoFactory(e) => e.to_string(),
            Self::FactoryFailed(e) => e.to_string(),
            Self::InvalidConfig(e) => e.to_string(),
        }
    }
}

pub(crate) enum Target<Req, Res> {
    Noop,
    Call(RouteService<Req, Res>),
    Broken(Broken),
}

/// One built route.
pub(crate) struct Entry<Req, Res> {
    pub(crate) name: Arc<str>,
    pub(crate) strategy: Arc<str>,
    pub(crate) endpoint: Option<String>,
    pub(crate) config: Option<String>,
    pub(crate) updated_at: i64,
    /// The local services this build used (as primary or fallback) and their generations.
    pub(crate) locals_used: Vec<(Arc<str>, u64)>,
    pub(crate) target: Target<Req, Res>,
    pub(crate) handles: Option<StackHandles>,
    pub(crate) metrics: Arc<RouteMetrics>,
    /// The credential files the build read, stamped: a change rebuilds the route.
    pub(crate) files: CredentialFiles,
    /// Newer credential files that did not build (stamped) and why, this build serving on:
    /// the route is retried when they change again.
    pub(crate) rejected: Mutex<Option<(CredentialFiles, String)>>,
}

impl<Req, Res> Built for Entry<Req, Res> {
    fn same_row(&self, row: &RouteRow) -> bool {
        *self.strategy == *row.strategy
            && self.endpoint == row.endpoint
            && self.config == row.config
            // A renewed certificate or key is a change of the route, though not of its row.
            && !self.files_changed()
    }

    fn is_broken(&self) -> bool {
        matches!(self.target, Target::Broken(_))
    }

    fn locals_used(&self) -> &[(Arc<str>, u64)] {
        &self.locals_used
    }
}

impl<Req, Res> Entry<Req, Res> {
    /// Whether its credential files changed since it was built, and since they were last
    /// rejected.
    pub(crate) fn files_changed(&self) -> bool {
        self.files.changed()
            && lock(&self.rejected)
                .as_ref()
                .is_none_or(|(rejected, _)| rejected.changed())
    }

    /// Whether `row` is this entry's own, it builds, and only its credential files changed:
    /// then a failed rebuild keeps it.
    pub(crate) fn only_files_changed(&self, row: &RouteRow) -> bool {
        !self.is_broken()
            && *self.strategy == *row.strategy
            && self.endpoint == row.endpoint
            && self.config == row.config
            && !self.files.is_empty()
    }

    /// Why the newest credential files were not taken, while this build serves on (nothing
    /// once the files are back to those it was built with).
    pub(crate) fn rejected_files(&self) -> Option<String> {
        let rejected = lock(&self.rejected);
        let (_, why) = rejected.as_ref()?;
        self.files.changed().then(|| why.clone())
    }

    pub(crate) fn error(&self) -> Option<String> {
        match &self.target {
            Target::Broken(b) => Some(b.message()),
            _ => None,
        }
    }
}

/// The snapshot's maps hash with foldhash (seeded per map): their keys come from the routes
/// table, never from callers, and a lookup is most of a dispatch.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub(crate) struct Table<Req, Res> {
    /// Built from route rows.
    pub(crate) routes: FastMap<Arc<str>, Arc<Entry<Req, Res>>>,
    /// Local services with no row: served as `local`, with no stack.
    pub(crate) locals: FastMap<Arc<str>, Arc<Entry<Req, Res>>>,
    /// The names of every registered local service (routed or not), so snapshots of services
    /// need no lock.
    pub(crate) local_names: std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
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
pub(crate) type MakePlain<Req, Res> =
    Arc<dyn Fn(&Arc<RouteMetrics>) -> RouteService<Req, Res> + Send + Sync>;

pub(crate) struct Local<Req, Res> {
    /// The service (panics caught), boxed: the base of stacked routes and fallbacks.
    pub(crate) service: RouteService<Req, Res>,
    /// The service observed, for routes with no stack: the hot path.
    pub(crate) plain: MakePlain<Req, Res>,
    pub(crate) generation: u64,
}

pub(crate) fn local_entry<Req, Res>(name: &Arc<str>, local: &Local<Req, Res>) -> Entry<Req, Res>
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
        files: CredentialFiles::default(),
        rejected: Mutex::new(None),
    }
}
