//! The breaker's shared state and the handle that inspects and steers it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{BreakerMode, CircuitBreakerConfig};
use crate::observe::Metrics;
use crate::policy::{Policy, WindowStats};
use crate::state::{BreakerState, Circuit, Transition};

/// How many state changes a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 64;

/// A state change of a named breaker, as [`BreakerHandle::subscribe`] delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// When it happened (tokio's clock).
    pub at: Instant,
}

/// Everything a status page needs about one breaker, as serde data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state now.
    pub state: BreakerState,
    /// What the trip policy counts now (the window, or the current failure run).
    pub window: WindowStats,
    /// Calls refused since the breaker was built.
    pub rejected: u64,
    /// Times the breaker opened since it was built.
    pub opened: u64,
    /// While open: how long until probes are let through.
    #[serde(with = "switchyard_core::duration")]
    pub open_remaining: Option<Duration>,
}

/// What every clone of one breaker shares.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) circuit: Circuit,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) mode: BreakerMode,
    config: CircuitBreakerConfig,
    /// `Some` when calls must be timed for slow-call detection.
    pub(crate) slow_call_duration: Option<Duration>,
    /// Woken on every transition and freed probe slot, for `BreakerMode::Backpressure` waiters.
    pub(crate) wake: Arc<Notify>,
    /// Calls refused (fail-fast mode) since the breaker was built.
    pub(crate) rejected: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<StateChange>,
    state: Arc<watch::Sender<BreakerState>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("circuit", &self.circuit)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A closed breaker. `config` must have been validated.
    pub(crate) fn new(name: Arc<str>, config: CircuitBreakerConfig, policy: Policy) -> Self {
        let metrics = Arc::new(Metrics::new(&name));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let state = Arc::new(watch::Sender::new(BreakerState::Closed));
        let wake = Arc::new(Notify::new());
        let slow_call_duration = policy.slow_call_duration();
        let observer = {
            let (name, metrics, events, state, wake) = (
                Arc::clone(&name),
                Arc::clone(&metrics),
                events.clone(),
                Arc::clone(&state),
                Arc::clone(&wake),
            );
            Box::new(move |t: &Transition| {
                metrics.transition(t);
                state.send_replace(t.to);
                // No subscriber is not an error.
                let _ = events.send(StateChange {
                    breaker: Arc::clone(&name),
                    from: t.from,
                    to: t.to,
                    at: t.at,
                });
                wake.notify_waiters();
            })
        };
        Self {
            circuit: Circuit::new(&config, policy, observer, Instant::now()),
            name,
            metrics,
            mode: config.mode,
            slow_call_duration,
            config,
            wake,
            rejected: std::sync::atomic::AtomicU64::new(0),
            events,
            state,
        }
    }
}

/// Inspects and steers one breaker, shared by every service its layer built.
///
/// Get it from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle). Cheap to
/// clone.
///
/// Transitions are published (tracing event, metrics, watch, broadcast) while the breaker's
/// transition lock is held, so that every observer sees them in the order they happened. A
/// tracing subscriber or metrics recorder must therefore not call back into the same breaker's
/// handle (`reset`, `force_*`) from inside its callback: spawn a task for that.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl BreakerHandle {
    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The config the breaker was built with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.shared.config
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.shared.circuit.state()
    }

    /// The breaker's counters now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let (window, opened) = self.shared.circuit.counters(now);
        let rejected = self
            .shared
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed);
        BreakerSnapshot {
            name: self.shared.name.to_string(),
            state: self.state(),
            window,
            rejected,
            opened,
            open_remaining: self.shared.circuit.open_remaining(now),
        }
    }

    /// Holds the breaker open, refusing every call, until [`release`](Self::release) or
    /// [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.shared
            .circuit
            .force(BreakerState::ForcedOpen, Instant::now());
    }

    /// Holds the breaker closed: every call flows and nothing trips it, until
    /// [`release`](Self::release) or [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.shared
            .circuit
            .force(BreakerState::ForcedClosed, Instant::now());
    }

    /// Returns from a forced state to automatic operation, closed and with empty counters.
    /// Does nothing in the automatic states.
    pub fn release(&self) {
        self.shared.circuit.release(Instant::now());
    }

    /// Closes the breaker and forgets every recorded call, from any state.
    pub fn reset(&self) {
        self.shared
            .circuit
            .force(BreakerState::Closed, Instant::now());
    }

    /// A stream of every state change from now on. A subscriber that falls more than 64
    /// changes behind receives `RecvError::Lagged` and then the newest changes.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.events.subscribe()
    }

    /// The current state as a `watch` channel: for waiting until the breaker is in a state.
    pub fn watch(&self) -> watch::Receiver<BreakerState> {
        self.shared.state.subscribe()
    }

    /// Lets an outside signal drive the breaker: while `switch` reads `true` the breaker is
    /// held open, and when it turns `false` the breaker is released to automatic operation.
    ///
    /// This is how a health monitor, an overload detector or an operator's flag elsewhere
    /// takes a backend out of service through the breaker that already guards it. The
    /// returned task ends when the sender is dropped.
    ///
    /// The task reacts to changes of the switch: an operator's own `force_open` is left alone
    /// when the switch reads `false`, and a `reset` or `release` while the switch reads `true`
    /// lifts the hold until the switch changes again.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn follow(&self, mut switch: watch::Receiver<bool>) -> JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            // Only a hold this task placed is released: an operator's own `force_open` stays.
            let mut holding = false;
            loop {
                if *switch.borrow_and_update() {
                    if handle.state() != BreakerState::ForcedOpen {
                        handle.force_open();
                        holding = true;
                    }
                } else if holding {
                    holding = false;
                    if handle.state() == BreakerState::ForcedOpen {
                        handle.release();
                    }
                }
                if switch.changed().await.is_err() {
                    break;
                }
            }
        })
    }
}
