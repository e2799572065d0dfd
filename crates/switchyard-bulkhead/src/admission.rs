//! The admission controller: the bulkhead's slots, usable without tower.
//!
//! An [`AdmissionController`] hands out [`Permit`]s, at most `max_concurrent_calls` at a time
//! (beyond that the [`BulkheadPolicy`] decides), and takes each back when the permit is dropped, so
//! a cancelled future can never leak a slot. The tower service is a thin adapter over it, and the
//! ordered stream gate and non-tower code use it directly.
//!
//! The hard-reject and soft-allow policies are one atomic counter: no semaphore, no waker.
//! The queue policy is tokio's `Semaphore`, which is FIFO-fair and hands a released slot
//! straight to the longest waiter, so a newcomer cannot overtake the queue.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::config::{AdaptiveConfig, BulkheadConfig, BulkheadPolicy};
use crate::error::{BulkheadFull, FullReason};
use crate::observe::Metrics;

// === the shared counters ===

/// Aligns its content to its own cache line, away from the `Arc` count every permit writes.
#[derive(Debug, Default)]
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Inner {
    /// Counter policies: calls in flight. (The queue policy counts with its semaphore.)
    in_flight: CachePadded<AtomicU32>,
    name: Arc<str>,
    /// The slot count now: fixed, or moved by `adaptive`.
    limit: AtomicU32,
    adaptive: Option<AdaptiveConfig>,
    /// Queue policy: slots to keep when they come back, after the limit fell while they were
    /// in use (a semaphore cannot take back permits it has handed out).
    debt: AtomicU32,
    policy: BulkheadPolicy,
    semaphore: Semaphore,
    queued: AtomicU32,
    rejected: AtomicU64,
    over_capacity: AtomicU64,
    under_pressure: AtomicBool,
    pressure: watch::Sender<bool>,
    metrics: Metrics,
}

// === impl AdmissionController ===

/// Hands out the slots of one bulkhead. Cheap to clone; clones share the slots.
#[derive(Clone)]
pub struct AdmissionController {
    inner: Arc<Inner>,
}

/// A slot in a bulkhead, given back when dropped.
///
/// Hold it for as long as the work it admits runs; dropping it (or the future holding it)
/// frees the slot.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit {
    inner: Arc<Inner>,
    kind: Kind,
}

enum Kind {
    /// A counted slot within the limit.
    Slot,
    /// A counted admission beyond the limit (soft-allow policies).
    Over,
    /// A slot from the queue policy's semaphore, whose permit was forgotten when taken and is
    /// added back on drop: the permit then needs no `Arc` of its own to the semaphore.
    Queued,
}

/// What a bulkhead holds right now, as serde data for status pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkheadStats {
    /// The bulkhead's name.
    pub name: String,
    /// Its slot count.
    pub max_concurrent_calls: u32,
    /// Calls holding a permit now (beyond the limit, under a soft-allow policy).
    pub in_flight: u32,
    /// Callers waiting in the queue now.
    pub queued: u32,
    /// Calls refused since the bulkhead was built.
    pub rejected: u64,
    /// Calls admitted beyond the limit since the bulkhead was built (soft-allow policies).
    pub over_capacity: u64,
    /// Whether the bulkhead is over its limit now (soft-allow-with-signal).
    pub under_pressure: bool,
}

impl AdmissionController {
    /// The slots `config` describes, named `name` (in errors, metrics and events).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](switchyard_core::ConfigError) naming the first invalid field.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: &BulkheadConfig,
    ) -> Result<Self, switchyard_core::ConfigError> {
        config.validate()?;
        switchyard_core::rejection::register::<BulkheadFull>();
        let name = name.into();
        let semaphore_permits = match config.policy {
            BulkheadPolicy::Queue { .. } => config.max_concurrent_calls as usize,
            _ => 0,
        };
        let controller = Self {
            inner: Arc::new(Inner {
                in_flight: CachePadded(AtomicU32::new(0)),
                metrics: Metrics::new(&name),
                name,
                limit: AtomicU32::new(config.max_concurrent_calls),
                adaptive: config.adaptive,
                debt: AtomicU32::new(0),
                policy: config.policy,
                semaphore: Semaphore::new(semaphore_permits),
                queued: AtomicU32::new(0),
                rejected: AtomicU64::new(0),
                over_capacity: AtomicU64::new(0),
                under_pressure: AtomicBool::new(false),
                pressure: watch::Sender::new(false),
            }),
        };
        controller
            .inner
            .metrics
            .limit
            .set(f64::from(config.max_concurrent_calls));
        Ok(controller)
    }

    /// Whether this is the only handle to the slots: no other clone, no permit.
    pub(crate) fn is_unshared(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bulkhead's policy.
    pub fn policy(&self) -> BulkheadPolicy {
        self.inner.policy
    }

    /// A slot now, without waiting. Under the queue policy this succeeds only when a slot is
    /// free and nobody is queued for it; use [`acquire`](Self::acquire) to queue.
    ///
    /// # Errors
    ///
    /// [`BulkheadFull`] when no slot is free (never under the soft-allow policies).
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, BulkheadFull> {
        self.try_slot().ok_or_else(|| self.reject(FullReason::Full))
    }

    /// A slot, waiting for one under the queue policy (in FIFO order, at most `max_wait`, and
    /// only if fewer than `capacity` callers wait already); the other policies answer at once,
    /// as [`try_acquire`](Self::try_acquire). Cancel-safe: dropping the future leaves the
    /// queue and takes no slot.
    ///
    /// # Errors
    ///
    /// [`BulkheadFull`] with reason `Full`, `QueueFull` or `WaitExpired`.
    pub async fn acquire(&self) -> Result<Permit, BulkheadFull> {
        self.acquire_uncounted()
            .await
            .inspect_err(|refusal| self.count_refusal(refusal))
    }

    /// [`acquire`](Self::acquire) without counting a refusal: the service counts it when
    /// `call` delivers it.
    pub(crate) async fn acquire_uncounted(&self) -> Result<Permit, BulkheadFull> {
        let BulkheadPolicy::Queue { capacity, max_wait } = self.inner.policy else {
            return self
                .try_slot()
                .ok_or_else(|| self.refusal(FullReason::Full));
        };
        if let Some(permit) = self.try_slot() {
            return Ok(permit);
        }
        let inner = &*self.inner;
        let _in_queue = QueueSeat::take(inner);
        if inner.queued.load(Ordering::Acquire) > capacity {
            return Err(self.refusal(FullReason::QueueFull));
        }
        let start = Instant::now();
        let waited = if max_wait == crate::config::NO_DEADLINE {
            // No timer to arm: a wait with no deadline costs only the semaphore's queue.
            Ok(inner.semaphore.acquire().await)
        } else {
            tokio::time::timeout(max_wait, inner.semaphore.acquire()).await
        };
        inner.metrics.wait.record(start.elapsed().as_secs_f64());
        match waited {
            // No await point between getting the slot and owning it as a `Permit`.
            Ok(Ok(slot)) => {
                slot.forget();
                Ok(self.permit(Kind::Queued))
            }
            // The semaphore is never closed; treat it as full all the same.
            Ok(Err(_closed)) => Err(self.refusal(FullReason::Full)),
            Err(_elapsed) => Err(self.refusal(FullReason::WaitExpired)),
        }
    }

    /// A slot if one is free now, or an admission the policy allows beyond the limit; never
    /// counts a rejection.
    #[inline]
    pub(crate) fn try_slot(&self) -> Option<Permit> {
        let inner = &*self.inner;
        match inner.policy {
            BulkheadPolicy::HardReject => {
                let mut current = inner.in_flight.load(Ordering::Relaxed);
                loop {
                    if current >= inner.limit.load(Ordering::Relaxed) {
                        return None;
                    }
                    match inner.in_flight.compare_exchange_weak(
                        current,
                        current + 1,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Some(self.permit(Kind::Slot)),
                        Err(actual) => current = actual,
                    }
                }
            }
            BulkheadPolicy::SoftAllow | BulkheadPolicy::SoftAllowWithSignal => {
                let before = inner.in_flight.fetch_add(1, Ordering::SeqCst);
                if before < inner.limit.load(Ordering::Relaxed) {
                    return Some(self.permit(Kind::Slot));
                }
                inner.over_capacity.fetch_add(1, Ordering::Relaxed);
                inner.metrics.over_capacity.increment(1);
                if inner.policy == BulkheadPolicy::SoftAllowWithSignal {
                    // Raise the hint first, then settle the signal from a fresh count: a
                    // release racing with this admission either sees the hint and settles
                    // the signal itself, or is seen by the fresh count (see `settle_pressure`).
                    inner.under_pressure.store(true, Ordering::SeqCst);
                    settle_pressure(inner);
                }
                Some(self.permit(Kind::Over))
            }
            BulkheadPolicy::Queue { .. } => inner.semaphore.try_acquire().ok().map(|slot| {
                slot.forget();
                self.permit(Kind::Queued)
            }),
        }
    }

    #[inline]
    fn permit(&self, kind: Kind) -> Permit {
        self.inner.metrics.in_flight.increment(1.0);
        Permit {
            inner: Arc::clone(&self.inner),
            kind,
        }
    }

    /// A refusal, counted (metrics, stats, tracing): for refusals delivered to a caller now.
    #[cold]
    pub(crate) fn reject(&self, reason: FullReason) -> BulkheadFull {
        let refusal = self.refusal(reason);
        self.count_refusal(&refusal);
        refusal
    }

    /// A refusal not yet delivered (the service decides in `poll_ready`, delivers in `call`).
    #[cold]
    pub(crate) fn refusal(&self, reason: FullReason) -> BulkheadFull {
        BulkheadFull::new(Arc::clone(&self.inner.name), reason)
    }

    /// Counts a refusal as it reaches its caller.
    #[cold]
    pub(crate) fn count_refusal(&self, refusal: &BulkheadFull) {
        let inner = &*self.inner;
        inner.rejected.fetch_add(1, Ordering::Relaxed);
        inner.metrics.rejected(refusal.reason());
        tracing::debug!(
            target: "switchyard_bulkhead",
            bulkhead = %inner.name,
            reason = refusal.reason().as_str(),
            "bulkhead refused a call"
        );
    }

    /// `true` while a soft-allow-with-signal bulkhead is over its limit: watch it to slow
    /// down upstream. Stays `false` under the other policies.
    pub fn pressure(&self) -> watch::Receiver<bool> {
        self.inner.pressure.subscribe()
    }

    /// The slot count now (moves under an adaptive config).
    pub fn limit(&self) -> u32 {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// Feeds one finished call to the adaptive limit: `ok` is whether it succeeded, `latency`
    /// how long it took. Does nothing without an adaptive config. The tower service calls it
    /// for every call; other users of the controller call it themselves.
    pub fn record(&self, ok: bool, latency: std::time::Duration) {
        self.inner.record(ok, latency);
    }

    /// The bulkhead's counters now.
    pub fn stats(&self) -> BulkheadStats {
        let inner = &*self.inner;
        BulkheadStats {
            name: inner.name.to_string(),
            max_concurrent_calls: inner.limit.load(Ordering::Acquire),
            in_flight: inner.in_flight(),
            queued: inner.queued.load(Ordering::Acquire),
            rejected: inner.rejected.load(Ordering::Relaxed),
            over_capacity: inner.over_capacity.load(Ordering::Relaxed),
            under_pressure: inner.under_pressure.load(Ordering::Acquire),
        }
    }
}

impl fmt::Debug for AdmissionController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionController")
            .field("name", &self.inner.name)
            .field("limit", &self.inner.limit.load(Ordering::Relaxed))
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

// === impl Inner: slots, the queue, the adaptive limit ===

impl Inner {
    /// The adaptive limit's reaction to one finished call (see `AdmissionController::record`).
    fn record(&self, ok: bool, latency: std::time::Duration) {
        let inner = self;
        let Some(adaptive) = inner.adaptive else {
            return;
        };
        let congested = !ok || latency > adaptive.latency_threshold;
        let mut current = inner.limit.load(Ordering::Acquire);
        loop {
            let next = if congested {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                // in [0, current)
                let shrunk = (f64::from(current) * adaptive.decrease_factor) as u32;
                shrunk
                    .min(current.saturating_sub(1))
                    .max(adaptive.min_limit)
            } else if inner.in_flight().saturating_mul(2) >= current {
                current
                    .saturating_add(adaptive.increase_by)
                    .min(adaptive.max_limit)
            } else {
                // Not busy enough for a success to say more slots would be used.
                current
            };
            if next == current {
                return;
            }
            match inner.limit.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    inner.resize(current, next);
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Calls holding a slot now.
    fn in_flight(&self) -> u32 {
        match self.policy {
            BulkheadPolicy::Queue { .. } => {
                let free = u32::try_from(self.semaphore.available_permits()).unwrap_or(u32::MAX);
                (self.limit.load(Ordering::Acquire) + self.debt.load(Ordering::Acquire))
                    .saturating_sub(free)
            }
            _ => self.in_flight.load(Ordering::Acquire),
        }
    }

    /// Applies a limit change from `from` to `to` (the counter policies read the limit as
    /// they go; the queue policy's semaphore must be given or relieved of permits).
    fn resize(&self, from: u32, to: u32) {
        self.metrics.limit.set(f64::from(to));
        tracing::debug!(
            target: "switchyard_bulkhead",
            bulkhead = %self.name,
            from,
            to,
            "bulkhead limit adapted"
        );
        if !matches!(self.policy, BulkheadPolicy::Queue { .. }) {
            return;
        }
        if to > from {
            // Forgive debt first: those slots are still out and will simply come back.
            let mut grow = to - from;
            while grow > 0 {
                match self
                    .debt
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                {
                    Ok(_) => grow -= 1,
                    Err(_) => break,
                }
            }
            self.semaphore.add_permits(grow as usize);
        } else {
            let shrink = (from - to) as usize;
            let forgotten = self.semaphore.forget_permits(shrink);
            let owed = u32::try_from(shrink - forgotten).unwrap_or(u32::MAX);
            self.debt.fetch_add(owed, Ordering::AcqRel);
        }
    }
}

// === impl Permit ===

/// A place in the queue, left when dropped (also when the waiting future is cancelled).
struct QueueSeat<'a>(&'a Inner);

impl<'a> QueueSeat<'a> {
    fn take(inner: &'a Inner) -> Self {
        inner.queued.fetch_add(1, Ordering::AcqRel);
        inner.metrics.queued.increment(1.0);
        Self(inner)
    }
}

impl Drop for QueueSeat<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queued.decrement(1.0);
    }
}

impl Permit {
    /// Feeds the call this permit admitted to the adaptive limit, as
    /// [`AdmissionController::record`] does.
    pub fn record(&self, ok: bool, latency: std::time::Duration) {
        self.inner.record(ok, latency);
    }

    /// Whether the bulkhead adapts its limit, so that outcomes are worth timing.
    pub(crate) fn is_adaptive(&self) -> bool {
        self.inner.adaptive.is_some()
    }

    /// The name of the bulkhead this permit belongs to, shared.
    pub(crate) fn bulkhead(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// Whether this admission went beyond the bulkhead's limit (soft-allow policies).
    pub fn is_over_capacity(&self) -> bool {
        matches!(self.kind, Kind::Over)
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", &self.inner.name)
            .field("over_capacity", &self.is_over_capacity())
            .finish()
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        let inner = &*self.inner;
        inner.metrics.in_flight.decrement(1.0);
        if let Kind::Queued = self.kind {
            // Pay a debt left by a lowered limit before handing the slot on.
            let paid = inner
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok();
            if !paid {
                inner.semaphore.add_permits(1);
            }
        } else {
            inner.in_flight.fetch_sub(1, Ordering::SeqCst);
            if inner.under_pressure.load(Ordering::SeqCst) {
                settle_pressure(inner);
            }
        }
    }
}

/// Sets the pressure signal from a fresh count of the calls in flight.
///
/// Runs inside the watch channel's lock, so settlements are ordered and the last one reads the
/// newest count: the signal cannot be left stale by two threads racing (an admission going
/// over while a release comes back within). The admission raises `under_pressure` before it
/// settles and a release checks it after its decrement, both `SeqCst`: either the release sees
/// the hint and settles, or the admission's fresh count sees the release.
#[cold]
fn settle_pressure(inner: &Inner) {
    inner.pressure.send_if_modified(|signalled| {
        let over = inner.in_flight.load(Ordering::SeqCst) > inner.limit.load(Ordering::SeqCst);
        inner.under_pressure.store(over, Ordering::SeqCst);
        if *signalled == over {
            return false;
        }
        *signalled = over;
        if over {
            tracing::warn!(
                target: "switchyard_bulkhead",
                bulkhead = %inner.name,
                limit = inner.limit.load(Ordering::Relaxed),
                "bulkhead over capacity"
            );
        } else {
            tracing::info!(
                target: "switchyard_bulkhead",
                bulkhead = %inner.name,
                "bulkhead back within capacity"
            );
        }
        true
    });
}
