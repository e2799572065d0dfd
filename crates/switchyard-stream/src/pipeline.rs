//! The pipeline: Receiver (sequence numbers) → Gate (ordering, backpressure, shutdown) →
//! Engine (per-message retry, panic recovery), run over one client stream.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use switchyard_bulkhead::{AdmissionController, BulkheadConfig};
use switchyard_core::{ConfigError, panic_message};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};

use crate::failure::{FailureKind, MessageFailure, Summary};
use crate::lanes::{LaneId, Lanes, Left, Queued};
use crate::options::{BackpressurePolicy, Options, OrderingMode};

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
type SpawnLane<T> = Arc<dyn Fn(&mut JoinSet<()>, Arc<Run<T>>, LaneId, Arc<str>) + Send + Sync>;

/// The pipeline's metric handles, registered once (a lookup per message would cost more than
/// the gate itself). Install the metrics recorder before building pipelines.
struct Metrics {
    admitted: metrics::Counter,
    retries: metrics::Counter,
    in_flight: metrics::Gauge,
    queued: metrics::Gauge,
    key_queue_depth: metrics::Histogram,
    over_capacity: metrics::Gauge,
    /// `messages_failed_total` by (ran, kind).
    failed: [[metrics::Counter; FailureKind::ALL.len()]; 2],
}

impl Metrics {
    /// Handles for pipeline `name`; `policy` labels failures ("unlimited" without a
    /// backpressure capacity).
    fn new(name: &str, policy: &'static str) -> Self {
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
/// A key function: one that borrows the key from the message (no copy; a known key's lane
/// is found by it and its name shared), or one that computes it.
enum KeyFn<T> {
    Borrowed(BorrowedKey<T>),
    Computed(ComputedKey<T>),
}

/// A message's key: borrowed from it, or computed.
enum Key<'a> {
    Borrowed(&'a str),
    Computed(Arc<str>),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Computed(key) => key,
        }
    }

    /// As an `Arc<str>`: a computed key shared, a borrowed one copied.
    fn to_arc(&self) -> Arc<str> {
        match self {
            Key::Borrowed(key) => Arc::from(*key),
            Key::Computed(key) => Arc::clone(key),
        }
    }
}

type BorrowedKey<T> = Arc<dyn for<'a> Fn(&'a T) -> &'a str + Send + Sync>;
type ComputedKey<T> = Arc<dyn Fn(&T) -> Arc<str> + Send + Sync>;

struct Inner<T> {
    name: Arc<str>,
    metrics: Metrics,
    options: Options,
    bulkhead: Option<BulkheadConfig>,
    spawn_lane: SpawnLane<T>,
    key: Option<KeyFn<T>>,
    /// Set when shutdown starts.
    closing: watch::Sender<bool>,
    /// Streams running now.
    active: watch::Sender<usize>,
    /// Messages running beyond capacity under soft-allow-with-signal, over all streams.
    over_now: AtomicUsize,
    /// The pressure signal: true while `over_now` is above 0.
    pressure: watch::Sender<bool>,
}

impl<T> Inner<T> {
    fn pressure_up(&self, name: &str) {
        self.over_now.fetch_add(1, Ordering::AcqRel);
        self.metrics.over_capacity.increment(1.0);
        self.signal_pressure(name);
    }

    fn pressure_down(&self, name: &str) {
        self.over_now.fetch_sub(1, Ordering::AcqRel);
        self.metrics.over_capacity.decrement(1.0);
        self.signal_pressure(name);
    }

    /// Sets the signal from the count, under the watch's own lock, so racing changes cannot
    /// leave it stale.
    fn signal_pressure(&self, name: &str) {
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
/// `Service<Message<T>>`), the [`Options`], and optionally a key function. Each call of
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
            .field("options", &self.inner.options)
            .field("keyed", &self.inner.key.is_some())
            .finish_non_exhaustive()
    }
}

fn lanes<T, H>(handler: H) -> SpawnLane<T>
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

impl<T> Pipeline<T> {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its options.
    pub fn options(&self) -> &Options {
        &self.inner.options
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

    /// The pressure signal of [`BackpressurePolicy::SoftAllowWithSignal`]: `true` while any
    /// stream runs messages beyond the backpressure capacity, `false` once all are back
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
        options: Options,
        handler: H,
    ) -> Result<Self, ConfigError>
    where
        H: Service<Message<T>> + Clone + Send + Sync + 'static,
        H::Error: Into<BoxError> + 'static,
        H::Future: Send + 'static,
    {
        if options.ordering.mode == OrderingMode::KeyedFifo {
            return Err(ConfigError::new(
                "ordering.mode",
                "keyed_fifo needs a key function: build the pipeline with Pipeline::keyed",
            ));
        }
        Self::build(name.into(), options, lanes(handler), None)
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
        options: Options,
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
            options,
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
        options: Options,
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
        Self::build(name.into(), options, lanes(handler), Some(key))
    }

    fn build(
        name: Arc<str>,
        options: Options,
        spawn_lane: SpawnLane<T>,
        key: Option<KeyFn<T>>,
    ) -> Result<Self, ConfigError> {
        options.validate()?;
        let bulkhead = options.bulkhead()?;
        Ok(Self {
            inner: Arc::new(Inner {
                metrics: Metrics::new(
                    &name,
                    if options.backpressure.capacity == 0 {
                        "unlimited"
                    } else {
                        options.backpressure.policy.as_str()
                    },
                ),
                name,
                options,
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
            keyed: self.inner.options.ordering.mode == OrderingMode::KeyedFifo,
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
            grace: self.inner.options.shutdown.grace_period,
        };
        let drain = self.inner.options.shutdown.drain_on_close;
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

        // Receive until the stream ends, fails, or the grace period after shutdown is over.
        let mut reading = true;
        let mut cancelled = None;
        while reading {
            // Finished workers are reaped as they end, without waiting.
            while let Some(joined) = tasks.try_join_next() {
                run.reaped(joined);
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
                    reading = false;
                }
                () = run.terminated.notified() => {
                    return run.stop(tasks, seq).await;
                }
                // Once shutdown has started and no worker is left, the stream is done with:
                // it stops being read.
                joined = tasks.join_next(), if deadline.is_some() => match joined {
                    None => {
                        // The client learns which messages were read from the summary.
                        run.end(
                            FailureKind::Shutdown,
                            format!("the pipeline shut down after reading {seq} messages"),
                        );
                        reading = false;
                    }
                    Some(joined) => run.reaped(joined),
                },
                next = stream.next() => {
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
                            cancelled = Some(status);
                            reading = false;
                        }
                    }
                }
            }
        }
        if let Some(status) = cancelled {
            if matches!(
                status.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ) {
                // The caller cancelled (or its deadline passed): no answer can be delivered,
                // so everything admitted is cancelled.
                run.terminate(FailureKind::ContextCancelled, status.message().to_owned());
                return run.stop(tasks, seq).await;
            }
            // The stream broke (a transport or decoding error): nothing more arrives, and the
            // messages already admitted finish; the answer carries the stream's own status.
            let mut summary = run.summary_mut();
            if summary.end == FailureKind::None {
                summary.end = FailureKind::Internal;
                summary.end_error = Some(format!("the stream failed: {}", status.message()));
                summary.end_code = Some(status.code() as i32);
            }
            drop(summary);
        }
        // Let admitted messages finish, within the grace period once shutdown starts.
        loop {
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
                    run.end(FailureKind::Shutdown, "the pipeline shut down before every message ran".to_owned());
                    break;
                }
                () = run.terminated.notified() => {
                    return run.stop(tasks, seq).await;
                }
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(joined) => run.reaped(joined),
                }
            }
        }
        run.finish(seq)
    }
}

/// One stream's view of the pipeline's shutdown.
struct ShutdownWatch {
    closing: watch::Receiver<bool>,
    /// False once the pipeline is gone (nothing can start a shutdown any more).
    listening: bool,
    /// Set when shutdown starts: the end of the grace period.
    deadline: Option<Instant>,
    grace: std::time::Duration,
}

impl ShutdownWatch {
    /// Whether the pipeline's shutdown flag changed since this stream last looked.
    fn signalled(&self) -> bool {
        self.armed() && self.closing.has_changed().unwrap_or(false)
    }

    /// Whether a shutdown may still start.
    fn armed(&self) -> bool {
        self.listening && self.deadline.is_none()
    }

    /// Waits for the next change; answers whether shutdown started (setting the deadline).
    async fn started(&mut self) -> bool {
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

/// What stopped [`take_buffered`].
enum Taken {
    /// Nothing more is ready now (or the batch is full, or a shutdown came): read on.
    More,
    /// The stream ended.
    End,
    /// The stream failed.
    Failed(tonic::Status),
}

/// Takes the messages `stream` has ready, up to a batch, into `batch`, in one pass (each poll
/// with a no-op waker: the run loop polls the stream again, with its own, before it waits).
/// Stops before a message past a shutdown, for the run loop to see the shutdown first.
fn take_buffered<S, T>(
    mut stream: Pin<&mut S>,
    batch: &mut Vec<T>,
    shutdown: &ShutdownWatch,
) -> Taken
where
    S: Stream<Item = Result<T, tonic::Status>>,
{
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while batch.len() < BATCH && !shutdown.signalled() {
        match stream.as_mut().poll_next(&mut cx) {
            std::task::Poll::Ready(Some(Ok(item))) => batch.push(item),
            std::task::Poll::Ready(Some(Err(status))) => return Taken::Failed(status),
            std::task::Poll::Ready(None) => return Taken::End,
            std::task::Poll::Pending => return Taken::More,
        }
    }
    Taken::More
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The most buffered messages the receiver takes before it looks at shutdown and finished
/// workers again.
const BATCH: usize = 64;

/// Counts a running stream for `Pipeline::shutdown`.
struct Active<'a>(&'a watch::Sender<usize>);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Drop for Run<T> {
    /// The messages still waiting when a stream's state goes (its `run` future dropped) leave
    /// the pipeline-wide queue gauge.
    fn drop(&mut self) {
        let lanes = self.lanes.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.pipeline
            .metrics
            .queued
            .decrement(lanes.waiting() as f64);
    }
}

/// Marks what a dropped `run` future cuts as the caller's cancellation. Dropped before the
/// workers are (it is declared after them); on a normal return it changes nothing that is
/// still read.
struct CancelOnDrop<'a, T>(&'a Run<T>);

impl<T> Drop for CancelOnDrop<'_, T> {
    fn drop(&mut self) {
        *lock(&self.0.cut) = FailureKind::ContextCancelled;
    }
}

/// One stream's state, shared by its receiver and its key workers.
struct Run<T> {
    pipeline: Arc<Inner<T>>,
    admission: Option<AdmissionController>,
    lanes: Mutex<Lanes<T>>,
    /// Whether lanes are keys (`keyed_fifo`) rather than the whole stream.
    keyed: bool,
    /// The empty key, shared.
    empty: Arc<str>,
    summary: Mutex<Summary>,
    succeeded: AtomicU64,
    retries: AtomicU64,
    over_capacity: AtomicU64,
    /// Set when shutdown starts: new messages are rejected.
    closing: AtomicBool,
    /// What a message cut off mid-run is reported as.
    cut: Mutex<FailureKind>,
    /// Woken when a handler's terminal failure ends the stream.
    terminated: tokio::sync::Notify,
    /// Set when the stream ended early: no further message is started.
    stopped: AtomicBool,
}

impl<T: Clone + Send + 'static> Run<T> {
    /// The Receiver and the Gate's ordering step, for a batch of messages read together:
    /// numbers each, finds its key, and queues it behind its key's earlier messages (starting
    /// a worker for a key with none running). One lock of the lanes for the batch.
    fn receive(self: &Arc<Self>, seq: &mut u64, batch: &mut Vec<T>, tasks: &mut JoinSet<()>) {
        let capacity = self.pipeline.options.ordering.capacity;
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

    /// A message's key, or why it has none (the key function panicked).
    fn key_of<'a>(&self, item: &'a T) -> Result<Key<'a>, String> {
        let found = match &self.pipeline.key {
            None => return Ok(Key::Borrowed("")),
            Some(KeyFn::Borrowed(key_fn)) => {
                catch_unwind(AssertUnwindSafe(|| Key::Borrowed(key_fn(item))))
            }
            Some(KeyFn::Computed(key_fn)) => {
                catch_unwind(AssertUnwindSafe(|| Key::Computed(key_fn(item))))
            }
        };
        found.map_err(|panic| format!("the key function panicked: {}", panic_message(&*panic)))
    }

    /// One ordering lane's worker: its messages, one at a time, in sequence order.
    async fn work<H>(self: Arc<Self>, lane: LaneId, key: Arc<str>, mut handler: H)
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
    async fn process<H>(&self, handler: &mut H, message: Queued<T>, lane_key: &Arc<str>) -> bool
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
                        if self.pipeline.options.backpressure.policy
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

        let retry = &self.pipeline.options.retry;
        let attempts = retry.max_attempts.max(1);
        let mut item = Some(item);
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
                if !retry.backoff.is_zero() {
                    tokio::time::sleep(retry.backoff).await;
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

impl<T> Run<T> {
    fn name(&self) -> &str {
        &self.pipeline.name
    }

    fn summary_mut(&self) -> MutexGuard<'_, Summary> {
        lock(&self.summary)
    }

    fn reject(&self, seq: u64, key: &str, kind: FailureKind, error: String) {
        self.fail(seq, key, kind, 0, error, false);
    }

    fn fail(
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

    /// Shutdown started: reject new messages, and waiting ones unless draining.
    fn begin_shutdown(&self, drain: bool) {
        self.closing.store(true, Ordering::Release);
        tracing::info!(target: "switchyard_stream", pipeline = self.name(), drain, "stream shutting down");
        if !drain {
            self.reject_queued(FailureKind::Shutdown, "the pipeline is shutting down");
        }
    }

    /// Rejects every message still waiting for its turn (their workers then stop).
    fn reject_queued(&self, kind: FailureKind, why: &str) {
        let waiting = lock(&self.lanes).drain();
        self.reject_all(waiting, kind, why);
    }

    /// Rejects messages taken out of their lanes.
    fn reject_all(&self, left: Left<T>, kind: FailureKind, why: &str) {
        self.pipeline.metrics.queued.decrement(left.behind as f64);
        for message in left.messages {
            let key = message.key.as_deref().unwrap_or("");
            self.reject(message.seq, key, kind, why.to_owned());
        }
    }

    /// Ends the stream now: cancels what runs and rejects what waits, with the kind that
    /// ended it.
    async fn stop(&self, mut tasks: JoinSet<()>, received: u64) -> Summary {
        tasks.shutdown().await;
        let kind = *lock(&self.cut);
        self.reject_queued(kind, "the stream ended before it ran");
        self.finish(received)
    }

    /// Notes a worker that ended: one that panicked is a bug of the pipeline's, reported as
    /// the stream's end (handlers' panics are caught before this).
    fn reaped(&self, joined: Result<(), tokio::task::JoinError>) {
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
    fn terminate(&self, kind: FailureKind, error: String) {
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
    fn end(&self, kind: FailureKind, error: String) {
        let mut summary = self.summary_mut();
        if summary.end == FailureKind::None {
            summary.end = kind;
            summary.end_error = Some(error);
        }
    }

    /// The summary, `received` being the number of messages read.
    fn finish(&self, received: u64) -> Summary {
        let mut summary = std::mem::take(&mut *self.summary_mut());
        summary.received = received;
        summary.succeeded = self.succeeded.load(Ordering::Relaxed);
        summary.retries = self.retries.load(Ordering::Relaxed);
        summary.over_capacity = self.over_capacity.load(Ordering::Relaxed);
        summary.failures.sort_by_key(|f| f.seq);
        summary
    }
}

/// A lane's worker, for the lane's sake. It adds the lane's successes to the stream's count
/// when the worker ends, however it ends (one shared counter bump per lane, not per message).
/// If the worker panics (a bug of the pipeline's: handlers' panics are caught), its lane is
/// closed and its waiting messages rejected (`Internal`), so the key is not left stuck behind
/// a dead worker.
struct LaneGuard<'a, T> {
    run: &'a Run<T>,
    lane: LaneId,
    finished: bool,
    succeeded: u64,
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
struct Running<'a, T> {
    run: &'a Run<T>,
    seq: u64,
    key: &'a Arc<str>,
    attempts: u32,
    done: bool,
    /// Counted in the in-flight gauge.
    in_flight: bool,
    /// Running over capacity under soft-allow-with-signal (part of the pressure signal).
    over: bool,
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
