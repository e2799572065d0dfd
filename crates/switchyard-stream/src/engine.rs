//! The Engine: each lane's worker runs its messages, one at a time and in order, through the
//! handler, with per-message retries on tokio time, and catches the handler's panics (a
//! panicking handler fails its message, never a worker or a key).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use switchyard_core::panic_message;
use switchyard_core::sync::lock;
use switchyard_retry::Backoff;
use tokio::task::JoinSet;
use tower::{BoxError, Service, ServiceExt};

use crate::config::BackpressurePolicy;
use crate::failure::FailureKind;
use crate::lanes::{LaneId, Queued};
use crate::run::Run;

/// One admitted message, as the handler gets it: the item is the handler's to keep (to
/// forward, say, without a copy). With retries on, each attempt but the last gets a clone of
/// the item and the last gets the item itself. Cloning a `Message` clones its item, so a
/// tower layer in the handler's stack that keeps a copy of each request (a retry, a hedge)
/// copies the item each call. Where that is dear, share the items: a `Pipeline<Arc<T>>` run
/// over the stream mapped (`stream.map(|m| m.map(Arc::new))`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message<T> {
    /// Its place in the stream: 1 for the first message.
    pub seq: u64,
    /// Its ordering key ("" without a key function).
    pub key: Arc<str>,
    /// Which attempt this is: 1, then 2... on retries.
    pub attempt: u32,
    /// The message itself.
    pub item: T,
}
/// Starts one lane's worker, with its own clone of the handler, on the stream's task set.
/// Built where the handler's type is known, so the worker is spawned as it is (no boxed
/// future, no dynamic call per poll) and each message is a direct call of the handler; the
/// pipeline itself stays free of the handler's type.
pub(crate) type SpawnLane<T> =
    Arc<dyn Fn(&mut JoinSet<()>, Arc<Run<T>>, LaneId, Arc<str>) + Send + Sync>;
pub(crate) fn lanes<T, H>(handler: H) -> SpawnLane<T>
where
    H: Service<Message<T>> + Clone + Send + Sync + 'static,
    H::Error: Into<BoxError> + 'static,
    H::Future: Send + 'static,
    T: Clone + Send + 'static,
{
    Arc::new(
        move |tasks: &mut JoinSet<()>, run: Arc<Run<T>>, lane, key| {
            tasks.spawn(run.work(lane, key, handler.clone()));
        },
    )
}
impl<T: Clone + Send + 'static> Run<T> {
    /// One ordering lane's worker: its messages, one at a time, in sequence order.
    pub(crate) async fn work<H>(self: Arc<Self>, lane: LaneId, key: Arc<str>, mut handler: H)
    where
        H: Service<Message<T>> + Send,
        H::Error: Into<BoxError>,
        H::Future: Send,
    {
        let mut guard = LaneGuard {
            run: &self,
            lane,
            finished: false,
            succeeded: 0,
        };
        loop {
            if self.stopped.load(Ordering::Acquire) {
                // The stream is over: what waits is rejected by the run, not started here.
                guard.finished = true;
                return;
            }
            let next = {
                let mut lanes = lock(&self.lanes);
                match lanes.pop(lane) {
                    Some(next) => next,
                    None => {
                        // Empty: the lane closes (under the lock the receiver queues under,
                        // so no message is left behind).
                        guard.finished = true;
                        let left = lanes.close(lane);
                        debug_assert!(left.messages.is_empty());
                        return;
                    }
                }
            };
            let (next, behind) = next;
            if behind {
                self.pipeline.metrics.queued.decrement(1.0);
            }
            if self.process(&mut handler, next, &key).await {
                guard.succeeded += 1;
            }
        }
    }

    /// The Gate's backpressure step, then the Engine (attempts with backoff, panics caught);
    /// answers whether the message succeeded. One function, not two nested ones: each
    /// `async fn` layer costs every poll of every message a little.
    pub(crate) async fn process<H>(
        &self,
        handler: &mut H,
        message: Queued<T>,
        lane_key: &Arc<str>,
    ) -> bool
    where
        H: Service<Message<T>> + Send,
        H::Error: Into<BoxError>,
        H::Future: Send,
    {
        let Queued { seq, key, item } = message;
        let key = key.as_ref().unwrap_or(lane_key);
        // From here on the message is reported however it ends: waiting for a slot, running,
        // or cut by the end of the grace period or a cancellation.
        let mut running = Running {
            run: self,
            seq,
            key,
            attempts: 0,
            done: false,
            in_flight: false,
            over: false,
        };
        let mut permit = None;
        if let Some(admission) = &self.admission {
            match admission.acquire().await {
                Ok(granted) => {
                    if granted.is_over_capacity() {
                        self.over_capacity.fetch_add(1, Ordering::Relaxed);
                        if self.pipeline.config.backpressure.policy
                            == BackpressurePolicy::SoftAllowWithSignal
                        {
                            running.over = true;
                            self.pipeline.pressure_up(self.name());
                        }
                    }
                    permit = Some(granted);
                }
                Err(full) => {
                    running.done = true;
                    self.reject(seq, key, FailureKind::Backpressure, full.to_string());
                    return false;
                }
            }
        }
        let metrics = &self.pipeline.metrics;
        metrics.admitted.increment(1);
        metrics.in_flight.increment(1.0);
        running.in_flight = true;

        let retry = &self.pipeline.config.retry;
        let attempts = retry.max_attempts.max(1);
        let mut item = Some(item);
        // Made at the first retry: a message that succeeds at once pays nothing for it.
        let mut backoff: Option<(Backoff, fastrand::Rng)> = None;
        let mut attempt = 0;
        let succeeded = loop {
            attempt += 1;
            running.attempts = attempt;
            // The item's copy and the error's text are made inside the caught block too: a
            // `Clone` or a `Display` that panics fails this message, not the worker.
            let outcome = AssertUnwindSafe(async {
                // Each attempt but the last gets a copy; the last gets the item itself.
                let this = if attempt < attempts {
                    item.clone()
                } else {
                    item.take()
                };
                let Some(this) = this else {
                    // Unreachable: only the last attempt takes the item.
                    return Err(Box::new((
                        FailureKind::Internal,
                        "the item was sent already".to_owned(),
                    )));
                };
                let request = Message {
                    seq,
                    key: Arc::clone(key),
                    attempt,
                    item: this,
                };
                // Boxed: the outcome stays one word wide on the success path.
                let failed = |error: H::Error| {
                    let error: BoxError = error.into();
                    Box::new((FailureKind::classify(&error), error.to_string()))
                };
                handler.ready().await.map_err(failed)?;
                handler.call(request).await.map(drop).map_err(failed)
            })
            .catch_unwind()
            .await;
            let (kind, error) = match outcome {
                Ok(Ok(())) => break true,
                Ok(Err(failure)) => *failure,
                Err(panic) => (
                    FailureKind::Internal,
                    format!("the handler panicked: {}", panic_message(&*panic)),
                ),
            };
            if kind.is_retryable() && attempt < attempts {
                tracing::debug!(target: "switchyard_stream", pipeline = self.name(), seq, attempt, %error, "retrying a message");
                let (backoff, rng) = backoff.get_or_insert_with(|| {
                    (
                        Backoff::new(retry.backoff, retry.jitter),
                        fastrand::Rng::new(),
                    )
                });
                let pause = backoff.next_delay(rng);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                self.retries.fetch_add(1, Ordering::Relaxed);
                self.pipeline.metrics.retries.increment(1);
                continue;
            }
            if kind.is_terminal() {
                // The handler says the stream is over (its caller left, or it is shutting
                // down): the stream ends here, whatever else was admitted.
                self.terminate(kind, format!("message {seq} ended the stream: {error}"));
            }
            self.fail(seq, key, kind, attempt, error, true);
            break false;
        };
        running.done = true;
        drop(running);
        drop(permit);
        succeeded
    }
}

/// A lane's worker, for the lane's sake. It adds the lane's successes to the stream's count
/// when the worker ends, however it ends (one shared counter bump per lane, not per message).
/// If the worker panics (a bug of the pipeline's: handlers' panics are caught), its lane is
/// closed and its waiting messages rejected (`Internal`), so the key is not left stuck behind
/// a dead worker.
pub(crate) struct LaneGuard<'a, T> {
    pub(crate) run: &'a Run<T>,
    pub(crate) lane: LaneId,
    pub(crate) finished: bool,
    pub(crate) succeeded: u64,
}

impl<T> Drop for LaneGuard<'_, T> {
    fn drop(&mut self) {
        self.run
            .succeeded
            .fetch_add(self.succeeded, Ordering::Relaxed);
        if self.finished || !std::thread::panicking() {
            // Done, or aborted (the run rejects what is left in the lanes itself).
            return;
        }
        let waiting = lock(&self.run.lanes).close(self.lane);
        self.run
            .reject_all(waiting, FailureKind::Internal, "the lane's worker failed");
    }
}

/// A message running in the Engine. If its task is cancelled (the grace period ended, the
/// caller cancelled), dropping this reports it.
pub(crate) struct Running<'a, T> {
    pub(crate) run: &'a Run<T>,
    pub(crate) seq: u64,
    pub(crate) key: &'a Arc<str>,
    pub(crate) attempts: u32,
    pub(crate) done: bool,
    /// Counted in the in-flight gauge.
    pub(crate) in_flight: bool,
    /// Running over capacity under soft-allow-with-signal (part of the pressure signal).
    pub(crate) over: bool,
}

impl<T> Drop for Running<'_, T> {
    fn drop(&mut self) {
        if self.in_flight {
            self.run.pipeline.metrics.in_flight.decrement(1.0);
        }
        if self.over {
            self.run.pipeline.pressure_down(self.run.name());
        }
        if !self.done {
            // Cut while waiting for a slot (never ran: rejected) or while running (failed);
            // unwinding from a panic of the pipeline's own is `Internal`, not a shutdown.
            let kind = if std::thread::panicking() {
                FailureKind::Internal
            } else {
                *lock(&self.run.cut)
            };
            let (ran, what) = if self.attempts > 0 {
                (true, "cancelled while running")
            } else {
                (false, "cancelled while waiting for a slot")
            };
            self.run.fail(
                self.seq,
                self.key,
                kind,
                self.attempts,
                what.to_owned(),
                ran,
            );
        }
    }
}
