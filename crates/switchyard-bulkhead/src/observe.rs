//! Metrics: the names are part of the crate's public contract (see the README).

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram};

use crate::error::FullReason;

/// Handles registered once per bulkhead, so the call path never builds a metric key. Install
/// the recorder before building the layer: handles taken earlier stay no-ops.
pub(crate) struct Metrics {
    pub(crate) in_flight: Gauge,
    pub(crate) limit: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) over_capacity: Counter,
    pub(crate) wait: Histogram,
    rejected_full: Counter,
    rejected_queue_full: Counter,
    rejected_wait_expired: Counter,
}

impl Metrics {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let rejected = |reason: FullReason| {
            metrics::counter!(
                "switchyard_bulkhead_rejected_total",
                "bulkhead" => name.to_string(),
                "reason" => reason.as_str()
            )
        };
        Self {
            in_flight: metrics::gauge!("switchyard_bulkhead_in_flight", "bulkhead" => name.to_string()),
            queued: metrics::gauge!("switchyard_bulkhead_queued", "bulkhead" => name.to_string()),
            limit: metrics::gauge!("switchyard_bulkhead_limit", "bulkhead" => name.to_string()),
            over_capacity: metrics::counter!(
                "switchyard_bulkhead_over_capacity_total",
                "bulkhead" => name.to_string()
            ),
            wait: metrics::histogram!("switchyard_bulkhead_wait_seconds", "bulkhead" => name.to_string()),
            rejected_full: rejected(FullReason::Full),
            rejected_queue_full: rejected(FullReason::QueueFull),
            rejected_wait_expired: rejected(FullReason::WaitExpired),
        }
    }

    pub(crate) fn rejected(&self, reason: FullReason) {
        match reason {
            FullReason::Full => self.rejected_full.increment(1),
            FullReason::QueueFull => self.rejected_queue_full.increment(1),
            FullReason::WaitExpired => self.rejected_wait_expired.increment(1),
        }
    }
}
