//! Following a `tower::discover::Discover` stream: its `Insert`s and `Remove`s add, replace
//! and remove endpoints.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_core::ConfigError;
use switchyard_core::sync::lock;
use tower::discover::{Change, Discover};
use tower::{BoxError, Service};

use crate::balance::{Balance, boxed};
use crate::endpoint::{EndpointConfig, EndpointView};
use crate::shared::take_out;
use crate::snapshot::Member;

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

// === impl Balance ===

impl<Req, Res, C> Balance<Req, Res, C> {
    /// Follows a `tower::discover::Discover` stream (any `TryStream` of `Change`s): an
    /// `Insert` adds the endpoint with `config` (for a key already there, it replaces only the
    /// service: health, ejection state and stats carry over), a `Remove` removes it; calls in
    /// flight finish either way. Keys become endpoint names through `Display`. Runs until the
    /// stream ends or the handle is dropped.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `config` is invalid ([`EndpointConfig::validate`]); nothing is
    /// followed then.
    pub fn follow<D>(&self, discover: D, config: EndpointConfig) -> Result<Discovery, ConfigError>
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
        config.validate()?;
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
                        tracing::warn!(
                            target: "switchyard_balance",
                            balancer = %shared.name,
                            %error,
                            "discovery failed"
                        );
                        continue;
                    }
                }
                shared.rebuild(&members);
            }
        });
        Ok(Discovery { task })
    }
}
