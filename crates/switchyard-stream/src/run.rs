//! One stream's state, shared by its receiver and its lane workers, and how it reports what
//! happened to each message and how the stream ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_bulkhead::AdmissionController;
use switchyard_core::sync::lock;
use tokio::task::JoinSet;

use crate::failure::{FailureKind, MessageFailure, Summary};
use crate::lanes::Lanes;
use crate::pipeline::Inner;

/// One stream's state, shared by its receiver and its key workers.
pub(crate) struct Run<T> {
    pub(crate) pipeline: Arc<Inner<T>>,
    pub(crate) admission: Option<AdmissionController>,
    pub(crate) lanes: Mutex<Lanes<T>>,
    /// Whether lanes are keys (`keyed_fifo`) rather than the whole stream.
    pub(crate) keyed: bool,
    /// The empty key, shared.
    pub(crate) empty: Arc<str>,
    pub(crate) summary: Mutex<Summary>,
    pub(crate) succeeded: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) over_capacity: AtomicU64,
    /// Set when shutdown starts: new messages are rejected.
    pub(crate) closing: AtomicBool,
    /// What a message cut off mid-run is reported as.
    pub(crate) cut: Mutex<FailureKind>,
    /// Woken when a handler's terminal failure ends the stream.
    pub(crate) terminated: tokio::sync::Notify,
    /// Set when the stream ended early: no further message is started.
    pub(crate) stopped: AtomicBool,
}

impl<T> Drop for Run<T> {
    /// The messages still waiting when a stream's state goes (its `run` future dropped) leave
    /// the pipeline-wide queue gauge.
    fn drop(&mut self) {
        let lanes = switchyard_core::sync::get_mut(&mut self.lanes);
        self.pipeline
            .metrics
            .queued
            .decrement(lanes.waiting() as f64);
    }
}
/// Marks what a dropped `run` future cuts as the caller's cancellation. Dropped before the
/// workers are (it is declared after them); on a normal return it changes nothing that is
/// still read.
pub(crate) struct CancelOnDrop<'a, T>(pub(crate) &'a Run<T>);

impl<T> Drop for CancelOnDrop<'_, T> {
    fn drop(&mut self) {
        *lock(&self.0.cut) = FailureKind::ContextCancelled;
    }
}
impl<T> Run<T> {
    pub(crate) fn name(&self) -> &str {
        &self.pipeline.name
    }

    pub(crate) fn summary_mut(&self) -> MutexGuard<'_, Summary> {
        lock(&self.summary)
    }

    pub(crate) fn reject(&self, seq: u64, key: &str, kind: FailureKind, error: String) {
        self.fail(seq, key, kind, 0, error, false);
    }

    pub(crate) fn fail(
        &self,
        seq: u64,
        key: &str,
        kind: FailureKind,
        attempts: u32,
        error: String,
        ran: bool,
    ) {
        let outcome = if ran { "failed" } else { "rejected" };
        let kinds = FailureKind::ALL.iter();
        if let Some(index) = kinds.clone().position(|k| *k == kind) {
            self.pipeline.metrics.failed[usize::from(ran)][index].increment(1);
        }
        tracing::debug!(target: "switchyard_stream", pipeline = self.name(), seq, key, kind = kind.as_str(), outcome, %error, "message not completed");
        if kind.is_terminal() {
            // Refused or cut by shutdown or cancellation: that is how the stream ends.
            self.end(kind, format!("message {seq}: {error}"));
        }
        self.summary_mut().record(
            MessageFailure {
                seq,
                key: key.to_owned(),
                kind,
                attempts,
                error,
            },
            ran,
        );
    }

    /// Ends the stream now: cancels what runs and rejects what waits, with the kind that
    /// ended it.
    pub(crate) async fn stop(&self, mut tasks: JoinSet<()>, received: u64) -> Summary {
        tasks.shutdown().await;
        let kind = *lock(&self.cut);
        self.reject_queued(kind, "the stream ended before it ran");
        self.finish(received)
    }

    /// Notes a worker that ended: one that panicked is a bug of the pipeline's, reported as
    /// the stream's end (handlers' panics are caught before this).
    pub(crate) fn reaped(&self, joined: Result<(), tokio::task::JoinError>) {
        if let Err(error) = joined
            && error.is_panic()
        {
            self.end(
                FailureKind::Internal,
                format!("a pipeline task panicked: {error}"),
            );
        }
    }

    /// A terminal failure inside the pipeline: the stream ends (the run loop cancels what is
    /// running and rejects what waits, with this kind).
    pub(crate) fn terminate(&self, kind: FailureKind, error: String) {
        self.end(kind, error);
        {
            // The kind is written before anyone can see the stream stopped (readers take the
            // lock after they see it).
            let mut cut = lock(&self.cut);
            if !self.stopped.swap(true, Ordering::AcqRel) {
                *cut = kind;
            }
        }
        self.terminated.notify_one();
    }

    /// Records how the stream ended (the first terminal failure wins).
    pub(crate) fn end(&self, kind: FailureKind, error: String) {
        let mut summary = self.summary_mut();
        if summary.end == FailureKind::None {
            summary.end = kind;
            summary.end_error = Some(error);
        }
    }

    /// The summary, `received` being the number of messages read.
    pub(crate) fn finish(&self, received: u64) -> Summary {
        let mut summary = std::mem::take(&mut *self.summary_mut());
        summary.received = received;
        summary.succeeded = self.succeeded.load(Ordering::Relaxed);
        summary.retries = self.retries.load(Ordering::Relaxed);
        summary.over_capacity = self.over_capacity.load(Ordering::Relaxed);
        summary.failures.sort_by_key(|f| f.seq);
        summary
    }
}
