//! The eligible endpoints as a call sees them: a snapshot rebuilt whenever the eligible set
//! changes (with the strategy's precomputed pick), so a call costs one snapshot load and one
//! pick, never a scan of the members.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_core::sync::lock;

use crate::endpoint::EndpointView;
use crate::selector::{Hint, Pick, PickContext};
use crate::shared::Shared;

/// An endpoint in its balancer: its view and its service.
pub(crate) struct Member<S> {
    pub(crate) view: Arc<EndpointView>,
    pub(crate) service: S,
}

/// The endpoint a pick chose.
pub(crate) struct Chosen<S> {
    pub(crate) view: Arc<EndpointView>,
    pub(crate) service: S,
    /// The service's generation, to tell later whether it was replaced.
    pub(crate) generation: u32,
}

/// The eligible endpoints and the strategy's pick over them.
pub(crate) struct Snapshot<S> {
    pub(crate) views: Vec<Arc<EndpointView>>,
    services: Vec<S>,
    /// Each service's generation (`EndpointView::generation` when the snapshot was built).
    generations: Vec<u32>,
    pick: Option<Box<dyn Pick>>,
    /// The earliest time an ejected endpoint returns (ns since the epoch; `u64::MAX`: none).
    pub(crate) next_return: u64,
    /// No eligible endpoint is ready: `views` holds the not-ready ones (a call waits on its
    /// endpoint), and the balancer's `poll_ready` waits for one to become ready.
    pub(crate) waiting: bool,
}

impl<S> Snapshot<S> {
    /// The snapshot of a balancer with no endpoint.
    pub(crate) fn empty() -> Self {
        Self {
            views: Vec::new(),
            services: Vec::new(),
            generations: Vec::new(),
            pick: None,
            next_return: u64::MAX,
            waiting: false,
        }
    }
}

// === impl Shared ===

impl<S: Clone, Req> Shared<S, Req> {
    /// Rebuilds the snapshot from `members` (the caller holds their lock).
    pub(crate) fn rebuild(&self, members: &[Member<S>]) {
        let now = self.now();
        let mut next_return = u64::MAX;
        let (mut views, mut services) = (Vec::new(), Vec::new());
        let (mut waiting_views, mut waiting_services) = (Vec::new(), Vec::new());
        for member in members {
            if let Some(until) = lock(&member.view.outlier).returns_at(now) {
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

    /// Rebuilds the snapshot, taking the members' lock.
    pub(crate) fn changed(&self) {
        self.rebuild(&lock(&self.members));
    }

    /// The endpoint a call at `now` with `hint` goes to: the first of `hint`'s preferred
    /// endpoints that is eligible, else the strategy's pick.
    pub(crate) fn choose(&self, now: u64, hint: Option<&Hint>) -> Option<Chosen<S>> {
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
    pub(crate) fn current_at(&self, now: u64) -> arc_swap::Guard<Arc<Snapshot<S>>> {
        let snapshot = self.snapshot.load();
        if snapshot.next_return <= now {
            drop(snapshot);
            self.changed();
            return self.snapshot.load();
        }
        snapshot
    }
}
