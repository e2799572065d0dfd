//! The Gate: admits each message by shutdown state, ordering (a lane per key, a bounded
//! queue of waiting messages) and backpressure, or rejects it with a `FailureKind`. It
//! admits; it does not execute.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_core::sync::lock;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::failure::FailureKind;
use crate::lanes::{Left, Queued};
use crate::run::Run;

/// One stream's view of the pipeline's shutdown.
pub(crate) struct ShutdownWatch {
    pub(crate) closing: watch::Receiver<bool>,
    /// False once the pipeline is gone (nothing can start a shutdown any more).
    pub(crate) listening: bool,
    /// Set when shutdown starts: the end of the grace period.
    pub(crate) deadline: Option<Instant>,
    pub(crate) grace: std::time::Duration,
}

impl ShutdownWatch {
    /// Whether the pipeline's shutdown flag changed since this stream last looked.
    pub(crate) fn signalled(&self) -> bool {
        self.armed() && self.closing.has_changed().unwrap_or(false)
    }

    /// Whether a shutdown may still start.
    pub(crate) fn armed(&self) -> bool {
        self.listening && self.deadline.is_none()
    }

    /// Waits for the next change; answers whether shutdown started (setting the deadline).
    pub(crate) async fn started(&mut self) -> bool {
        if self.closing.changed().await.is_err() {
            self.listening = false;
            return false;
        }
        if *self.closing.borrow_and_update() {
            self.deadline = Some(Instant::now() + self.grace);
            return true;
        }
        false
    }
}
impl<T: Clone + Send + 'static> Run<T> {
    /// The Receiver and the Gate's ordering step, for a batch of messages read together:
    /// numbers each, finds its key, and queues it behind its key's earlier messages (starting
    /// a worker for a key with none running). One lock of the lanes for the batch.
    pub(crate) fn receive(
        self: &Arc<Self>,
        seq: &mut u64,
        batch: &mut Vec<T>,
        tasks: &mut JoinSet<()>,
    ) {
        let capacity = self.pipeline.config.ordering.capacity;
        let mut opened = Vec::new();
        let mut lanes = lock(&self.lanes);
        for item in batch.drain(..) {
            *seq += 1;
            let seq = *seq;
            let key = match self.key_of(&item) {
                Ok(key) => key,
                Err(error) => {
                    drop(lanes);
                    self.reject(seq, "", FailureKind::Internal, error);
                    drop(item);
                    lanes = lock(&self.lanes);
                    continue;
                }
            };
            let name = key.as_str();
            let refused = if self.stopped.load(Ordering::Acquire) {
                Some((*lock(&self.cut), "the stream already ended".to_owned()))
            } else if self.closing.load(Ordering::Acquire) {
                Some((
                    FailureKind::Shutdown,
                    "the pipeline is shutting down".to_owned(),
                ))
            } else {
                None
            };
            let lane = lanes.find(if self.keyed { name } else { "" });
            let refused = refused.or_else(|| {
                (lane.is_some() && capacity > 0 && lanes.waiting() >= capacity).then(|| {
                    (
                        FailureKind::Ordering,
                        format!("the ordering queue is full ({capacity} messages wait)"),
                    )
                })
            });
            if let Some((kind, error)) = refused {
                drop(lanes);
                self.reject(seq, name, kind, error);
                drop(key);
                drop(item);
                lanes = lock(&self.lanes);
                continue;
            }
            // The message's own key, kept only where its lane's differs (global FIFO with a
            // key function, where every message has one): under `keyed_fifo` every message
            // shares its lane's.
            let own = (!self.keyed && self.pipeline.key.is_some()).then(|| {
                if name.is_empty() {
                    Arc::clone(&self.empty)
                } else {
                    key.to_arc()
                }
            });
            if let Some(id) = lane {
                let depth = lanes.push(
                    id,
                    Queued {
                        seq,
                        key: own,
                        item,
                    },
                );
                // Counted under the lock, so the lane's worker never takes it off first.
                let metrics = &self.pipeline.metrics;
                metrics.queued.increment(1.0);
                metrics.key_queue_depth.record(depth as f64);
                continue;
            }
            let lane_key = if self.keyed {
                key.to_arc()
            } else {
                Arc::clone(&self.empty)
            };
            let first = Queued {
                seq,
                key: own,
                item,
            };
            opened.push((lanes.open(Arc::clone(&lane_key), first), lane_key));
        }
        drop(lanes);
        for (id, key) in opened {
            (self.pipeline.spawn_lane)(tasks, Arc::clone(self), id, key);
        }
    }
}

impl<T> Run<T> {
    /// Shutdown started: reject new messages, and waiting ones unless draining.
    pub(crate) fn begin_shutdown(&self, drain: bool) {
        self.closing.store(true, Ordering::Release);
        tracing::info!(target: "switchyard_stream", pipeline = self.name(), drain, "stream shutting down");
        if !drain {
            self.reject_queued(FailureKind::Shutdown, "the pipeline is shutting down");
        }
    }

    /// Rejects every message still waiting for its turn (their workers then stop).
    pub(crate) fn reject_queued(&self, kind: FailureKind, why: &str) {
        let waiting = lock(&self.lanes).drain();
        self.reject_all(waiting, kind, why);
    }

    /// Rejects messages taken out of their lanes.
    pub(crate) fn reject_all(&self, left: Left<T>, kind: FailureKind, why: &str) {
        self.pipeline.metrics.queued.decrement(left.behind as f64);
        for message in left.messages {
            let key = message.key.as_deref().unwrap_or("");
            self.reject(message.seq, key, kind, why.to_owned());
        }
    }
}
