//! The pipeline: Receiver (sequence numbers) → Gate (ordering, backpressure, shutdown) →
//! Engine (per-message retry, panic recovery), run over one client stream.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use switchyard_bulkhead::{AdmissionController, BulkheadConfig};
use switchyard_core::ConfigError;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{BoxError, Service};

use crate::config::{OrderingMode, StreamConfig};
use crate::engine::{Message, SpawnLane, lanes};
use crate::failure::{FailureKind, Summary};
use crate::gate::ShutdownWatch;
use crate::metrics::Metrics;
use crate::receiver::{KeyFn, Taken, take_buffered};
use crate::run::{CancelOnDrop, Run};

pub(crate) struct Inner<T> {
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Metrics,
    pub(crate) config: StreamConfig,
    pub(crate) bulkhead: Option<BulkheadConfig>,
    pub(crate) spawn_lane: SpawnLane<T>,
    pub(crate) key: Option<KeyFn<T>>,
    /// Set when shutdown starts.
    pub(crate) closing: watch::Sender<bool>,
    /// Streams running now.
    pub(crate) active: watch::Sender<usize>,
    /// Messages running beyond capacity under soft-allow-with-signal, over all streams.
    pub(crate) over_now: AtomicUsize,
    /// The pressure signal: true while `over_now` is above 0.
    pub(crate) pressure: watch::Sender<bool>,
}

impl<T> Inner<T> {
    pub(crate) fn pressure_up(&self, name: &str) {
        self.over_now.fetch_add(1, Ordering::AcqRel);
        self.metrics.over_capacity.increment(1.0);
        self.signal_pressure(name);
    }

    pub(crate) fn pressure_down(&self, name: &str) {
        self.over_now.fetch_sub(1, Ordering::AcqRel);
        self.metrics.over_capacity.decrement(1.0);
        self.signal_pressure(name);
    }

    /// Sets the signal from the count, under the watch's own lock, so racing changes cannot
    /// leave it stale.
    pub(crate) fn signal_pressure(&self, name: &str) {
        self.pressure.send_if_modified(|signalled| {
            let over = self.over_now.load(Ordering::Acquire) > 0;
            if *signalled == over {
                return false;
            }
            *signalled = over;
            if over {
                tracing::info!(target: "switchyard_stream", pipeline = name, "over capacity: pressure signalled");
            } else {
                tracing::info!(target: "switchyard_stream", pipeline = name, "back within capacity");
            }
            true
        });
    }
}
/// The ordered client-stream pipeline for one RPC method: a handler (any tower
/// `Service<Message<T>>`), the [`StreamConfig`], and optionally a key function. Each call of
/// [`run`](Self::run) processes one client stream and answers its [`Summary`]; a service
/// implementation calls it with the `tonic::Streaming<T>` its method receives.
///
/// - **Receiver**: numbers the messages as they arrive (1, 2, ...).
/// - **Gate**: admits each message — or rejects it, with a [`FailureKind`] — by shutdown
///   state, ordering (global FIFO, or FIFO per key with different keys concurrent; a bounded
///   queue of waiting messages) and backpressure (switchyard-bulkhead's admission
///   controller: hard reject, queue, soft allow, soft allow with signal; a maximum in flight).
///   It admits; it does not execute.
/// - **Engine**: runs each admitted message through the handler with retries (attempts,
///   backoff on tokio time), catching panics (a panicking handler is a failed message, never
///   a crashed task or a stuck key).
///
/// Clones share the handler and the shutdown state.
pub struct Pipeline<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Pipeline<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .field("keyed", &self.inner.key.is_some())
            .finish_non_exhaustive()
    }
}
impl<T> Pipeline<T> {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The config it was built with.
    pub fn config(&self) -> &StreamConfig {
        &self.inner.config
    }

    /// Starts shutdown and waits until every running stream has finished. From now on every
    /// stream rejects new messages ([`FailureKind::Shutdown`]); messages waiting in ordering
    /// queues are rejected too, or run if `drain_on_close` is set; messages running (and,
    /// when draining, waiting) get the grace period, after which they are cancelled and
    /// reported. A stream stops being read once its admitted messages are done (its summary
    /// says how many were read, so the client knows what to send again), and a stream that
    /// starts after shutdown reads nothing and answers `UNAVAILABLE`.
    pub async fn shutdown(&self) {
        self.inner.closing.send_replace(true);
        let mut active = self.inner.active.subscribe();
        let _ = active.wait_for(|n| *n == 0).await;
    }

    /// The pressure signal of
    /// [`SoftAllowWithSignal`](crate::BackpressurePolicy::SoftAllowWithSignal): `true` while
    /// any stream runs messages beyond the backpressure capacity, `false` once all are back
    /// within it — for a caller upstream to slow down (or a client to be told to).
    pub fn pressure(&self) -> watch::Receiver<bool> {
        self.inner.pressure.subscribe()
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.closing.borrow()
    }
}

impl<T: Clone + Send + 'static> Pipeline<T> {
    /// A pipeline named `name` (in metrics and events) without a key function: global FIFO.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad option; `ordering.mode` if it is `keyed_fifo`
    /// (that needs [`keyed`](Self::keyed)).
    pub fn new<H>(
        name: impl Into<Arc<str>>,
        config: StreamConfig,
        handler: H,
    ) -> Result<Self, ConfigError>
    where
        H: Service<Message<T>> + Clone + Send + Sync + 'static,
        H::Error: Into<BoxError> + 'static,
        H::Future: Send + 'static,
    {
        if config.ordering.mode == OrderingMode::KeyedFifo {
            return Err(ConfigError::new(
                "ordering.mode",
                "keyed_fifo needs a key function: build the pipeline with Pipeline::keyed",
            ));
        }
        Self::build(name.into(), config, lanes(handler), None)
    }

    /// A pipeline whose messages have keys, borrowed from each message by `key` (a field:
    /// `|e: &Entry| e.account.as_str()`), so no key is copied per message: FIFO per key under
    /// [`OrderingMode::KeyedFifo`], global FIFO (keys only reported) under
    /// [`OrderingMode::Fifo`]. For keys that must be computed, see
    /// [`keyed_by`](Self::keyed_by).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad option.
    pub fn keyed<H, K>(
        name: impl Into<Arc<str>>,
        config: StreamConfig,
        handler: H,
        key: K,
    ) -> Result<Self, ConfigError>
    where
        H: Service<Message<T>> + Clone + Send + Sync + 'static,
        H::Error: Into<BoxError> + 'static,
        H::Future: Send + 'static,
        K: for<'a> Fn(&'a T) -> &'a str + Send + Sync + 'static,
    {
        Self::build(
            name.into(),
            config,
            lanes(handler),
            Some(KeyFn::Borrowed(Arc::new(key))),
        )
    }

    /// As [`keyed`](Self::keyed), with keys computed from each message (`|m: &Order|
    /// m.customer_id.to_string()`): a `String`, an `Arc<str>` or anything else that becomes
    /// one. Like `keyed`'s, the key function runs once per message while the stream's lanes
    /// are locked (the receiver queues a batch under one lock): keep it cheap.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad option.
    pub fn keyed_by<H, K, R>(
        name: impl Into<Arc<str>>,
        config: StreamConfig,
        handler: H,
        key: K,
    ) -> Result<Self, ConfigError>
    where
        H: Service<Message<T>> + Clone + Send + Sync + 'static,
        H::Error: Into<BoxError> + 'static,
        H::Future: Send + 'static,
        K: Fn(&T) -> R + Send + Sync + 'static,
        R: Into<Arc<str>>,
    {
        let key = KeyFn::Computed(Arc::new(move |item: &T| key(item).into()));
        Self::build(name.into(), config, lanes(handler), Some(key))
    }

    fn build(
        name: Arc<str>,
        config: StreamConfig,
        spawn_lane: SpawnLane<T>,
        key: Option<KeyFn<T>>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let bulkhead = config.bulkhead()?;
        Ok(Self {
            inner: Arc::new(Inner {
                metrics: Metrics::new(
                    &name,
                    if config.backpressure.capacity == 0 {
                        "unlimited"
                    } else {
                        config.backpressure.policy.as_str()
                    },
                ),
                name,
                config,
                bulkhead,
                spawn_lane,
                key,
                closing: watch::Sender::new(false),
                active: watch::Sender::new(0),
                over_now: AtomicUsize::new(0),
                pressure: watch::Sender::new(false),
            }),
        })
    }

    /// Processes one client stream (a `tonic::Streaming<T>`, or any stream of `Result<T,
    /// tonic::Status>`) to its end and answers what happened. Dropping the future (the caller
    /// cancelled the RPC) cancels every message still waiting or running.
    pub async fn run<S>(&self, stream: S) -> Summary
    where
        S: Stream<Item = Result<T, tonic::Status>> + Send,
    {
        let run = Arc::new(Run {
            pipeline: Arc::clone(&self.inner),
            admission: self.inner.bulkhead.as_ref().map(|config| {
                AdmissionController::new(Arc::clone(&self.inner.name), config)
                    .expect("validated when the pipeline was built")
            }),
            lanes: Mutex::default(),
            keyed: self.inner.config.ordering.mode == OrderingMode::KeyedFifo,
            empty: Arc::from(""),
            summary: Mutex::default(),
            succeeded: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            over_capacity: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            cut: Mutex::new(FailureKind::Shutdown),
            terminated: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
        });
        self.inner.active.send_modify(|n| *n += 1);
        let _active = Active(&self.inner.active);
        let mut shutdown = ShutdownWatch {
            closing: self.inner.closing.subscribe(),
            listening: true,
            deadline: None,
            grace: self.inner.config.shutdown.grace_period,
        };
        let drain = self.inner.config.shutdown.drain_on_close;
        let mut tasks = JoinSet::new();
        let _cancel = CancelOnDrop(&run);
        let mut stream = std::pin::pin!(stream);
        let mut seq = 0;
        let mut batch = Vec::new();
        if *shutdown.closing.borrow_and_update() {
            // Shut down already: read nothing, so the client can send it all elsewhere.
            run.end(
                FailureKind::Shutdown,
                "the pipeline is shutting down: no message was read".to_owned(),
            );
            return run.finish(seq);
        }

        // One loop for the stream's whole life: read while `reading` (until the stream ends or
        // fails, or shutdown has started and no worker is left), then let what was admitted
        // finish; from the start of a shutdown, all of it within the grace period.
        let mut reading = true;
        loop {
            if reading {
                // Finished workers are reaped as they end, without waiting.
                while let Some(joined) = tasks.try_join_next() {
                    run.reaped(joined);
                }
            }
            let deadline = shutdown.deadline;
            tokio::select! {
                biased;
                started = shutdown.started(), if shutdown.armed() => {
                    if started {
                        run.begin_shutdown(drain);
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    tasks.shutdown().await;
                    run.reject_queued(FailureKind::Shutdown, "the grace period ended");
                    run.end(
                        FailureKind::Shutdown,
                        "the pipeline shut down before every message ran".to_owned(),
                    );
                    break;
                }
                () = run.terminated.notified() => {
                    return run.stop(tasks, seq).await;
                }
                // While reading, workers are waited for only once shutdown has started: when
                // none is left, the stream is done with and stops being read.
                joined = tasks.join_next(), if !reading || deadline.is_some() => match joined {
                    None => {
                        if reading {
                            // The client learns which messages were read from the summary.
                            run.end(
                                FailureKind::Shutdown,
                                format!("the pipeline shut down after reading {seq} messages"),
                            );
                        }
                        break;
                    }
                    Some(joined) => run.reaped(joined),
                },
                next = stream.next(), if reading => {
                    // The messages already buffered are taken in one pass (up to a batch), so
                    // the wait above is set up once per batch, not once per message.
                    let taken = match next {
                        Some(Ok(item)) => {
                            batch.push(item);
                            take_buffered(stream.as_mut(), &mut batch, &shutdown)
                        }
                        None => Taken::End,
                        Some(Err(status)) => Taken::Failed(status),
                    };
                    run.receive(&mut seq, &mut batch, &mut tasks);
                    match taken {
                        Taken::More => {}
                        Taken::End => reading = false,
                        Taken::Failed(status) => {
                            reading = false;
                            if run.stream_failed(&status) {
                                return run.stop(tasks, seq).await;
                            }
                        }
                    }
                }
            }
        }
        run.finish(seq)
    }
}
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
/// Counts a running stream for `Pipeline::shutdown`.
struct Active<'a>(&'a watch::Sender<usize>);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
