//! Metrics and tracing: the names are part of the crate's public contract (see the README).

use metrics::{Counter, Gauge};
use tracing::info;

use crate::state::{BreakerState, Transition};

/// Metric names.
pub(crate) const CALLS: &str = "switchyard_breaker_calls_total";
pub(crate) const SLOW_CALLS: &str = "switchyard_breaker_slow_calls_total";
pub(crate) const STATE: &str = "switchyard_breaker_state";
pub(crate) const TRANSITIONS: &str = "switchyard_breaker_transitions_total";

/// Handles registered once per breaker, so the call path never builds a metric key.
///
/// As with every `metrics` handle, install the recorder before building the layer: handles
/// taken earlier stay no-ops.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
    pub(crate) ignored: Counter,
    pub(crate) rejected: Counter,
    pub(crate) slow: Counter,
    state: Gauge,
    name: std::sync::Arc<str>,
}

impl Metrics {
    pub(crate) fn new(name: &std::sync::Arc<str>) -> Self {
        let calls = |outcome: &'static str| metrics::counter!(CALLS, "breaker" => name.to_string(), "outcome" => outcome);
        let state = metrics::gauge!(STATE, "breaker" => name.to_string());
        state.set(BreakerState::Closed.as_gauge());
        Self {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            slow: metrics::counter!(SLOW_CALLS, "breaker" => name.to_string()),
            state,
            name: std::sync::Arc::clone(name),
        }
    }

    pub(crate) fn transition(&self, t: &Transition) {
        info!(
            target: "switchyard_breaker",
            breaker = %self.name,
            from = t.from.as_str(),
            to = t.to.as_str(),
            "circuit breaker state changed"
        );
        self.state.set(t.to.as_gauge());
        metrics::counter!(
            TRANSITIONS,
            "breaker" => self.name.to_string(),
            "from" => t.from.as_str(),
            "to" => t.to.as_str()
        )
        .increment(1);
    }
}
