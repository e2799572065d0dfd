//! What the router tells status pages: reload reports, service snapshots (endpoints
//! redacted), the router's health.

use std::time::Duration;

use serde::Serialize;
use switchyard_breaker::BreakerState;
use switchyard_core::sync::lock;

use crate::router::Router;
use crate::table::{Entry, Target};

#[derive(Default)]
pub(crate) struct StatusInner {
    pub(crate) last_reload: Option<ReloadReport>,
    pub(crate) last_error: Option<(String, u64)>,
}

pub(crate) use switchyard_core::unix_now;

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
    /// Why the newest version of the route's credential files (`transport.tls`,
    /// `transport.auth`) was not taken, the previous build serving on; cleared by the next
    /// build that takes them.
    pub rejected_files: Option<String>,
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

impl<Req, Res> Router<Req, Res>
where
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
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
}

pub(crate) fn info<Req, Res>(
    entry: &Entry<Req, Res>,
    has_local: bool,
    has_route: bool,
) -> ServiceInfo {
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
        rejected_files: entry.rejected_files(),
        last_call_error: entry.metrics.last_error().map(|(e, _)| e),
        last_call_error_at: entry.metrics.last_error().map(|(_, at)| at),
        updated_at: entry.updated_at,
    }
}

/// An endpoint as status pages show it ([`switchyard_client::redact_url`]).
pub(crate) fn redact(endpoint: &str) -> String {
    switchyard_client::redact_url(endpoint)
}
