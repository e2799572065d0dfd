//! Reloading: from rows, from a source, and following a source's changes.

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::sync::lock;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::diff::{self, Step};
use crate::error::SourceError;
use crate::files::CredentialFiles;
use crate::router::{Router, State};
use crate::source::{RouteRow, RouteSource};
use crate::status::{ReloadReport, unix_now};
use crate::table::{Entry, FastMap, Table, local_entry};

/// How long a watcher waits before trying a failed reload (or a failed change check) again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

impl<Req, Res> Router<Req, Res>
where
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
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

    /// Rebuilds the routes whose credential files (`transport.tls` and `transport.auth`
    /// certificates and keys) changed on disk since they were built. Every other route is
    /// kept as built, but for broken ones, which every rebuild retries. It is not a reload of
    /// the rows: the status's last reload and last source error stay as they were. The watcher
    /// calls it on each poll, off the runtime's workers (it reads files and runs the
    /// factories of the routes it rebuilds on the calling thread); returns the rebuild's
    /// report when a route was rebuilt.
    pub fn refresh_files(&self) -> Option<ReloadReport> {
        let table = self.inner.table.load();
        let stale: Vec<&Arc<str>> = table
            .routes
            .iter()
            .filter(|(_, entry)| !entry.files.is_empty() && entry.files_changed())
            .map(|(name, _)| name)
            .collect();
        if stale.is_empty() {
            return None;
        }
        tracing::info!(target: "switchyard_router", routes = ?stale, "credential files changed; rebuilding their routes");
        drop(table);
        let mut state = lock(&self.inner.state);
        let rows = state.rows.clone();
        Some(self.rebuild(&mut state, rows, false))
    }

    /// Reloads from `source` whenever it reports a change, until the handle is dropped or stopped.
    /// On the source's poll interval (every second if it has none) it also rebuilds the routes
    /// whose credential files changed ([`refresh_files`](Self::refresh_files)). Call
    /// [`reload_from`](Self::reload_from) once first so the router serves the table from its first
    /// call; the watcher then follows changes.
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
        let every = source.poll_every().unwrap_or(FILE_CHECK_INTERVAL);
        let task = tokio::spawn(async move {
            let mut files = tokio::time::interval(every);
            files.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The source's wait is kept across file checks, never restarted by them.
                let changed = source.changed();
                tokio::pin!(changed);
                let changed = loop {
                    tokio::select! {
                        changed = &mut changed => break changed,
                        _ = files.tick() => {
                            let router = router.clone();
                            let _ = tokio::task::spawn_blocking(move || router.refresh_files()).await;
                        }
                    }
                };
                match changed {
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
    pub(crate) fn rebuild(
        &self,
        state: &mut State<Req, Res>,
        rows: Vec<RouteRow>,
        reload: bool,
    ) -> ReloadReport {
        let started = Instant::now();
        let old = self.inner.table.load_full();
        let mut report = ReloadReport::default();
        let generation = |name: &str| state.locals.get(name).map(|l| l.generation);
        let plan = diff::plan(&old.routes, &rows, generation);
        let mut routes = FastMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (row, step) in rows.iter().zip(&plan.steps) {
            let previous = old.routes.get(row.service_name.as_str());
            let entry = match (step, previous) {
                (Step::Keep, Some(kept)) => Arc::clone(kept),
                (_, Some(serving))
                    if serving.only_files_changed(row)
                        && diff::locals_current(generation, &serving.locals_used) =>
                {
                    let built = self.build(state, row);
                    match built.error() {
                        None => Arc::new(built),
                        Some(error) => {
                            keep_serving(serving, built.files, error);
                            report.unchanged += 1;
                            routes.insert(Arc::clone(&serving.name), Arc::clone(serving));
                            continue;
                        }
                    }
                }
                _ => Arc::new(self.build(state, row)),
            };
            let error = entry.error();
            step.count(&mut report, error.is_some());
            if let Some(error) = error
                // Said once per new error, not on every reload while the row stays broken.
                && previous.and_then(|p| p.error()).as_ref() != Some(&error)
            {
                tracing::warn!(target: "switchyard_router", service = %entry.name, %error, "route broken");
            }
            routes.insert(Arc::clone(&entry.name), entry);
        }
        report.removed = plan.removed.len();
        let mut locals = FastMap::default();
        for (name, local) in &state.locals {
            if routes.contains_key(name) {
                continue;
            }
            let entry = match old.locals.get(name) {
                Some(entry) if diff::locals_current(generation, &entry.locals_used) => {
                    Arc::clone(entry)
                }
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
                "routes rebuilt (a local service or a credential file changed)"
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
}

/// How often a watcher checks credential files when its source has no poll interval.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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

/// New credential files of a working route did not build (a renewal half written, a key not
/// yet matching its certificate): the route keeps its build, which serves on, and remembers
/// the files' stamps so it is tried again only when they change again.
fn keep_serving<Req, Res>(serving: &Entry<Req, Res>, files: CredentialFiles, error: String) {
    let mut rejected = lock(&serving.rejected);
    if rejected.as_ref().map(|(_, was)| was) != Some(&error) {
        tracing::warn!(
            target: "switchyard_router",
            service = %serving.name,
            %error,
            "new credential files do not build; the route keeps its previous ones"
        );
    }
    *rejected = Some((files, error));
}
