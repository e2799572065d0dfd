//! Building a route from its row: the target (local, noop, a transport), the resilience
//! stack around it, and a broken route's typed error.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use switchyard_core::ConfigError;
use switchyard_resilience::{FallbackLayer, ResilienceLayer};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer};

use crate::config::RouteConfig;
use crate::error::{FactoryFailed, InvalidConfig, NoFactory, ServiceNotFound};
use crate::files::CredentialFiles;
use crate::observe::{RouteMetrics, observed};
use crate::router::{LOCAL, NOOP, Router, State};
use crate::source::RouteRow;
use crate::source::valid_service_name;
use crate::table::{Broken, Entry, Target};
use crate::transport::{CatchPanic, RouteSpec};

impl<Req, Res> Router<Req, Res>
where
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
    pub(crate) fn build(&self, state: &State<Req, Res>, row: &RouteRow) -> Entry<Req, Res> {
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
                    files: CredentialFiles::of_config(row.config.as_deref()),
                    rejected: Mutex::new(None),
                }
            }
        }
    }

    pub(crate) fn build_entry(&self, state: &State<Req, Res>, row: &RouteRow) -> Entry<Req, Res> {
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
            // Stamped before the build reads them: a change made meanwhile is seen next time.
            files: CredentialFiles::of_config(row.config.as_deref()),
            rejected: Mutex::new(None),
        };
        match self.build_target(state, row, &name, &strategy, &mut entry) {
            Ok(target) => entry.target = target,
            Err(broken) => entry.target = Target::Broken(broken),
        }
        entry
    }

    pub(crate) fn build_target(
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
            RouteConfig::from_json(row.config.as_deref().unwrap_or_default()).map_err(invalid)?;
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
            let factory = switchyard_core::sync::read(&self.inner.transports)
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
}
