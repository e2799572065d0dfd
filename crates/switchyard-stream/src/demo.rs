//! A small ledger service for the tests and the example (feature `demo`): the generated
//! tonic code of `proto/ledger.proto`, compiled with protox (no system `protoc`).

#![allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]

tonic::include_proto!("ledger");

impl From<&crate::Summary> for Posted {
    /// The ledger's answer: a stream's summary, as the proto says it.
    fn from(summary: &crate::Summary) -> Self {
        Self {
            received: summary.received,
            succeeded: summary.succeeded,
            failed: summary.failed,
            rejected: summary.rejected,
            retries: summary.retries,
            ordering_broken: summary.ordering_broken,
            failures: summary
                .failures
                .iter()
                .map(|f| Failure {
                    seq: f.seq,
                    account: f.key.clone(),
                    kind: f.kind.to_string(),
                    error: f.error.clone(),
                })
                .collect(),
        }
    }
}
