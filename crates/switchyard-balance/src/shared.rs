//! What a balancer's clones, response futures and background tasks share: the members, the
//! snapshot of the eligible ones, the clock, and what is done with each call's outcome
//! (health changes, outlier ejection).
//!
//! Locks are taken in one order: the members' lock, then an endpoint's outlier lock (then, to
//! count the ejected members, the others' one at a time). An endpoint's outlier lock alone is
//! never held while taking another.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use switchyard_core::Outcome;
use switchyard_core::sync::lock;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::OutlierConfig;
use crate::endpoint::{EndpointView, Health};
use crate::error::NoAvailableEndpoint;
use crate::outlier::{Cap, Verdict};
use crate::selector::{Hint, Rng, Selector};
use crate::snapshot::{Member, Snapshot};

/// Reads a call's [`Hint`].
pub(crate) type HintFn<Req> = Arc<dyn Fn(&Req) -> Option<Hint> + Send + Sync>;

/// A balancer's state, shared by its clones, its response futures and its tasks.
pub(crate) struct Shared<S, Req> {
    pub(crate) name: Arc<str>,
    pub(crate) selector: Arc<dyn Selector>,
    pub(crate) members: Mutex<Vec<Member<S>>>,
    pub(crate) snapshot: ArcSwap<Snapshot<S>>,
    pub(crate) rng: Rng,
    pub(crate) epoch: Instant,
    pub(crate) outlier: Option<OutlierConfig>,
    pub(crate) hint: Option<HintFn<Req>>,
    /// Woken when a snapshot with a ready endpoint replaces one without.
    pub(crate) ready: Arc<Notify>,
}

/// Removes the member named `name`, if any, marking it removed (its health checker stops).
pub(crate) fn take_out<S>(members: &mut Vec<Member<S>>, name: &str) {
    members.retain(|m| {
        let keep = m.view.name() != name;
        if !keep {
            m.view.removed.store(true, Ordering::Release);
            m.view.gone.notify_waiters();
        }
        keep
    });
}

// === impl Shared ===

impl<S, Req> Shared<S, Req> {
    /// Nanoseconds since the epoch, at least 1 (0 means "never" in the counters).
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    /// The error for a call with no eligible endpoint, counted.
    pub(crate) fn none_available(&self) -> NoAvailableEndpoint {
        metrics::counter!(
            "switchyard_balance_no_endpoint_total",
            "balancer" => self.name.to_string(),
        )
        .increment(1);
        NoAvailableEndpoint::new(Arc::clone(&self.name))
    }
}

impl<S: Clone, Req> Shared<S, Req> {
    /// Sets `view`'s health, logging a change and rebuilding if eligibility changed.
    pub(crate) fn apply_health(&self, members: &[Member<S>], view: &EndpointView, health: Health) {
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

    /// Feeds a call's `outcome`, classified at `now`, to outlier detection (if configured).
    pub(crate) fn record_outcome(&self, view: &EndpointView, outcome: Outcome, now: u64) {
        let Some(outlier) = &self.outlier else {
            return;
        };
        // With no streak to end and no window to count in, a success changes nothing
        // (`EndpointView::streak_open` says why this stays lock-free).
        if outcome == Outcome::Success
            && outlier.failure_rate.is_none()
            && !view.streak_open.load(Ordering::Acquire)
        {
            return;
        }
        // Most other outcomes reach no threshold: they take this endpoint's lock alone, never
        // the members' lock every call to every endpoint would share.
        {
            let mut state = lock(&view.outlier);
            if state.try_record(outcome, now, outlier) {
                view.streak_open
                    .store(state.streak_open(), Ordering::Release);
                return;
            }
        }
        self.record_at_threshold(view, outcome, outlier);
    }

    /// Records an outcome that reaches a threshold, under the members' lock: the cap depends
    /// on the other members, and an ejection rebuilds the snapshot.
    fn record_at_threshold(&self, view: &EndpointView, outcome: Outcome, outlier: &OutlierConfig) {
        let members = lock(&self.members);
        let now = self.now();
        let mut ejected = 0;
        let mut state = lock(&view.outlier);
        let verdict = state.record(outcome, now, outlier, || {
            // A call to a removed endpoint says nothing about the members.
            let member = members.iter().any(|m| std::ptr::eq(&*m.view, view));
            // `view` itself is not ejected when the cap is asked (and its lock is held).
            ejected = members
                .iter()
                .filter(|m| !std::ptr::eq(&*m.view, view) && m.view.ejected_at(now))
                .count();
            let others_eligible = self
                .snapshot
                .load()
                .views
                .iter()
                .any(|v| !std::ptr::eq(&**v, view));
            Cap::decide(
                member,
                ejected,
                members.len(),
                outlier.max_ejection_percent,
                others_eligible,
            )
        });
        view.streak_open
            .store(state.streak_open(), Ordering::Release);
        // Released before the snapshot is rebuilt, which takes every member's outlier lock.
        drop(state);
        match verdict {
            Verdict::Stay => {}
            Verdict::Spared => {
                tracing::debug!(
                    target: "switchyard_balance",
                    balancer = %self.name,
                    endpoint = view.name(),
                    ejected,
                    "not ejecting: at the max-ejection cap"
                );
            }
            Verdict::Ejected { times, length } => {
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
            }
        }
    }
}
