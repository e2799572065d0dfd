//! The pipeline's metric handles.

use crate::failure::FailureKind;

/// The pipeline's metric handles, registered once (a lookup per message would cost more than
/// the gate itself). Install the metrics recorder before building pipelines.
pub(crate) struct Metrics {
    pub(crate) admitted: metrics::Counter,
    pub(crate) retries: metrics::Counter,
    pub(crate) in_flight: metrics::Gauge,
    pub(crate) queued: metrics::Gauge,
    pub(crate) key_queue_depth: metrics::Histogram,
    pub(crate) over_capacity: metrics::Gauge,
    /// `messages_failed_total` by (ran, kind).
    pub(crate) failed: [[metrics::Counter; FailureKind::ALL.len()]; 2],
}

impl Metrics {
    /// Handles for pipeline `name`; `policy` labels failures ("unlimited" without a
    /// backpressure capacity).
    pub(crate) fn new(name: &str, policy: &'static str) -> Self {
        let label = || ("pipeline", name.to_owned());
        let failed = |outcome: &'static str| {
            FailureKind::ALL.map(|kind| {
                metrics::counter!(
                    "switchyard_stream_messages_failed_total",
                    "pipeline" => name.to_owned(),
                    "outcome" => outcome,
                    "kind" => kind.as_str(),
                    "policy" => policy,
                )
            })
        };
        Self {
            admitted: metrics::counter!("switchyard_stream_admitted_total", &[label()]),
            retries: metrics::counter!("switchyard_stream_retries_total", &[label()]),
            in_flight: metrics::gauge!("switchyard_stream_in_flight", &[label()]),
            queued: metrics::gauge!("switchyard_stream_queued", &[label()]),
            key_queue_depth: metrics::histogram!("switchyard_stream_key_queue_depth", &[label()]),
            over_capacity: metrics::gauge!("switchyard_stream_over_capacity", &[label()]),
            failed: [failed("rejected"), failed("failed")],
        }
    }
}
