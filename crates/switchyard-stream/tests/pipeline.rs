//! The pipeline, option by option, on paused tokio time; then a property test over random
//! interleavings, keys, failures and retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use switchyard_stream::{FailureKind, Message, Options, Pipeline, Summary};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{BoxError, service_fn};

/// A message: its key, and how many of its attempts fail before one succeeds (`u32::MAX`:
/// all fail; `PANIC`: the handler panics).
type Item = (String, u32);
const PANIC: u32 = u32::MAX - 1;

/// What the handler saw: each attempt's (key, seq, attempt, start, end), and the highest
/// concurrency overall and per key.
/// One attempt: key, seq, attempt, start, end.
type Attempt = (String, u64, u32, Duration, Duration);

#[derive(Default)]
struct Trace {
    attempts: Vec<Attempt>,
    running: HashMap<String, usize>,
    now_running: usize,
    max_running: usize,
    max_per_key: usize,
}

#[derive(Clone)]
struct Recorder {
    trace: Arc<Mutex<Trace>>,
    work: Duration,
    epoch: Instant,
}

impl Recorder {
    fn new(work: Duration) -> Self {
        Self {
            trace: Arc::default(),
            work,
            epoch: Instant::now(),
        }
    }

    fn handler(
        &self,
    ) -> impl tower::Service<Message<Item>, Response = (), Error = BoxError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static {
        let this = self.clone();
        service_fn(move |m: Message<Item>| {
            let this = this.clone();
            async move {
                let key = m.key.to_string();
                let start = this.epoch.elapsed();
                {
                    let mut t = this.trace.lock().unwrap();
                    let per_key = t.running.entry(key.clone()).or_default();
                    *per_key += 1;
                    let per_key = *per_key;
                    t.max_per_key = t.max_per_key.max(per_key);
                    t.now_running += 1;
                    t.max_running = t.max_running.max(t.now_running);
                }
                // Released whatever happens next (a failure, a panic, a cancellation).
                let _done = Done(Arc::clone(&this.trace), key.clone());
                if !this.work.is_zero() {
                    tokio::time::sleep(this.work).await;
                }
                let end = this.epoch.elapsed();
                this.trace
                    .lock()
                    .unwrap()
                    .attempts
                    .push((key, m.seq, m.attempt, start, end));
                let failing = m.item.1;
                if failing == PANIC {
                    panic!("handler bug on message {}", m.seq);
                }
                if m.attempt <= failing {
                    return Err::<(), BoxError>(format!("attempt {} failed", m.attempt).into());
                }
                Ok(())
            }
        })
    }

    fn seqs_of(&self, key: &str) -> Vec<u64> {
        let t = self.trace.lock().unwrap();
        let mut seqs: Vec<u64> = t
            .attempts
            .iter()
            .filter(|a| a.0 == key && a.2 == 1)
            .map(|a| a.1)
            .collect();
        seqs.dedup();
        seqs
    }
}

struct Done(Arc<Mutex<Trace>>, String);

impl Drop for Done {
    fn drop(&mut self) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.now_running -= 1;
        *t.running.get_mut(&self.1).expect("started") -= 1;
    }
}

fn options(json: &str) -> Options {
    Options::from_json(json).unwrap()
}

fn items(list: &[(&str, u32)]) -> Vec<Result<Item, tonic::Status>> {
    list.iter()
        .map(|(k, f)| Ok(((*k).to_owned(), *f)))
        .collect()
}

fn keyed(options: Options, recorder: &Recorder) -> Pipeline<Item> {
    Pipeline::keyed("test", options, recorder.handler(), |m: &Item| m.0.as_str()).unwrap()
}

async fn run_all(pipeline: &Pipeline<Item>, list: &[(&str, u32)]) -> Summary {
    pipeline.run(futures::stream::iter(items(list))).await
}

fn kinds(summary: &Summary) -> Vec<(u64, FailureKind)> {
    summary.failures.iter().map(|f| (f.seq, f.kind)).collect()
}

#[tokio::test(start_paused = true)]
async fn fifo_runs_one_message_at_a_time_in_stream_order() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let pipeline = Pipeline::new("test", Options::default(), recorder.handler()).unwrap();
    let started = Instant::now();
    let summary = run_all(&pipeline, &[("a", 0), ("b", 0), ("a", 0), ("c", 0)]).await;
    assert_eq!((summary.received, summary.succeeded), (4, 4));
    summary.status().unwrap();
    assert_eq!(recorder.seqs_of(""), [1, 2, 3, 4]);
    assert_eq!(recorder.trace.lock().unwrap().max_running, 1);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(40),
        "one after another"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_fifo_runs_keys_concurrently_and_each_key_in_order() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let pipeline = keyed(options(KEYED), &recorder);
    let started = Instant::now();
    let list = [("a", 0), ("b", 0), ("a", 0), ("c", 0), ("b", 0), ("a", 0)];
    let summary = run_all(&pipeline, &list).await;
    assert_eq!(summary.succeeded, 6);
    assert_eq!(recorder.seqs_of("a"), [1, 3, 6]);
    assert_eq!(recorder.seqs_of("b"), [2, 5]);
    assert_eq!(recorder.seqs_of("c"), [4]);
    let trace = recorder.trace.lock().unwrap();
    assert_eq!(
        trace.max_per_key, 1,
        "a key never runs two messages at once"
    );
    assert_eq!(trace.max_running, 3, "keys run side by side");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(30),
        "the longest key's three messages"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_ordering_queue_rejects_and_says_the_order_broke() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let pipeline = Pipeline::new(
        "test",
        options(r#"{ "ordering": { "capacity": 2 } }"#),
        recorder.handler(),
    )
    .unwrap();
    let summary = run_all(&pipeline, &[("", 0); 5]).await;
    // The first runs, two wait, the last two find the queue full.
    assert_eq!(
        kinds(&summary),
        [(4, FailureKind::Ordering), (5, FailureKind::Ordering)]
    );
    assert_eq!((summary.succeeded, summary.rejected), (3, 2));
    assert!(summary.ordering_broken);
    summary.status().unwrap();
}

#[tokio::test(start_paused = true)]
async fn hard_reject_refuses_a_message_whose_turn_comes_at_capacity() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let pipeline = keyed(
        options(
            r#"{ "ordering": { "mode": "keyed_fifo" },
                 "backpressure": { "policy": "hard_reject", "capacity": 1 } }"#,
        ),
        &recorder,
    );
    let summary = run_all(&pipeline, &[("a", 0), ("b", 0), ("a", 0)]).await;
    assert_eq!(kinds(&summary), [(2, FailureKind::Backpressure)]);
    assert_eq!(summary.succeeded, 2);
    assert_eq!(recorder.trace.lock().unwrap().max_running, 1);
}

#[tokio::test(start_paused = true)]
async fn the_queue_policy_waits_for_a_slot_within_its_bounds() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let queue = |extra: &str| {
        options(&format!(
            r#"{{ "ordering": {{ "mode": "keyed_fifo" }},
                 "backpressure": {{ "policy": "queue", "capacity": 1{extra} }} }}"#
        ))
    };
    let list = [("a", 0), ("b", 0), ("c", 0)];
    // Unbounded: everyone waits its turn, one at a time.
    let started = Instant::now();
    let summary = run_all(&keyed(queue(""), &recorder), &list).await;
    assert_eq!(summary.succeeded, 3);
    assert_eq!(recorder.trace.lock().unwrap().max_running, 1);
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    // One waiting seat: the third key is refused.
    let summary = run_all(&keyed(queue(r#", "queue_capacity": 1"#), &recorder), &list).await;
    assert_eq!(kinds(&summary), [(3, FailureKind::Backpressure)]);
    // A wait shorter than the work: both waiting keys give up.
    let summary = run_all(&keyed(queue(r#", "max_wait": "5ms""#), &recorder), &list).await;
    assert_eq!(
        kinds(&summary),
        [
            (2, FailureKind::Backpressure),
            (3, FailureKind::Backpressure)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn soft_allow_policies_run_beyond_capacity_and_count_it() {
    for policy in ["soft_allow", "soft_allow_with_signal"] {
        let recorder = Recorder::new(Duration::from_millis(10));
        let pipeline = keyed(
            options(&format!(
                r#"{{ "ordering": {{ "mode": "keyed_fifo" }},
                     "backpressure": {{ "policy": "{policy}", "capacity": 1 }} }}"#
            )),
            &recorder,
        );
        let mut pressure = pipeline.pressure();
        let run = spawn_run(
            &pipeline,
            futures::stream::iter(items(&[("a", 0), ("b", 0), ("c", 0)])),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let signalled = *pressure.borrow_and_update();
        let summary = run.await.unwrap();
        assert_eq!(
            (summary.succeeded, summary.over_capacity),
            (3, 2),
            "{policy}"
        );
        assert_eq!(recorder.trace.lock().unwrap().max_running, 3, "{policy}");
        // Only the signalling policy raises the pressure signal, and lowers it after.
        assert_eq!(signalled, policy == "soft_allow_with_signal", "{policy}");
        assert!(!*pressure.borrow(), "{policy}: back within capacity");
    }
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_backoff_up_to_the_limit() {
    let recorder = Recorder::new(Duration::ZERO);
    let pipeline = keyed(
        options(r#"{ "retry": { "max_attempts": 3, "backoff": "100ms" } }"#),
        &recorder,
    );
    let started = Instant::now();
    // Two failures then a success; then one that never succeeds.
    let summary = run_all(&pipeline, &[("a", 2), ("a", u32::MAX)]).await;
    assert_eq!(
        (summary.succeeded, summary.failed, summary.retries),
        (1, 1, 4)
    );
    let failure = &summary.failures[0];
    assert_eq!(
        (failure.seq, failure.kind, failure.attempts),
        (2, FailureKind::HandlerError, 3)
    );
    assert_eq!(failure.error, "attempt 3 failed");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(400),
        "four backoffs"
    );
    assert!(
        summary.ordering_broken,
        "message 2 failed and the key went on"
    );

    // No retries configured: one attempt.
    let recorder = Recorder::new(Duration::ZERO);
    let summary = run_all(&keyed(Options::default(), &recorder), &[("a", 1)]).await;
    assert_eq!((summary.failed, summary.retries), (1, 0));
}

/// An item that counts its copies, and fails its first `fail` attempts.
struct Counted {
    fail: u32,
    copies: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.copies.fetch_add(1, Ordering::Relaxed);
        Self {
            fail: self.fail,
            copies: Arc::clone(&self.copies),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_item_is_copied_only_for_attempts_before_the_last() {
    let handler = service_fn(|m: Message<Counted>| async move {
        if m.attempt <= m.item.fail {
            return Err::<(), BoxError>("not yet".into());
        }
        Ok(())
    });
    for (max_attempts, fail, copies, succeeded) in [
        // Without retries the handler gets the item itself.
        (1, 0, 0, 1),
        // Three attempts allowed: each attempt before the last gets a copy (it may not be
        // the last one that runs), the last the item itself.
        (3, 0, 1, 1),
        (3, 1, 2, 1),
        (3, 5, 2, 0),
    ] {
        let options = options(&format!(
            r#"{{ "retry": {{ "max_attempts": {max_attempts} }} }}"#
        ));
        let pipeline = Pipeline::new("copies", options, handler).unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let item = Counted {
            fail,
            copies: Arc::clone(&counter),
        };
        let summary = pipeline
            .run(futures::stream::iter([Ok::<_, tonic::Status>(item)]))
            .await;
        assert_eq!(
            (counter.load(Ordering::Relaxed), summary.succeeded),
            (copies, succeeded),
            "max_attempts {max_attempts}, failing {fail}"
        );
    }
}

/// An item whose copy panics (a user `Clone` with a bug).
struct BadClone(u32);

impl Clone for BadClone {
    fn clone(&self) -> Self {
        assert!(self.0 != 2, "clone bug on item {}", self.0);
        Self(self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_clone_fails_only_its_message() {
    let handler = service_fn(|_: Message<BadClone>| async { Ok::<_, BoxError>(()) });
    let options = options(r#"{ "retry": { "max_attempts": 2 } }"#);
    let pipeline = Pipeline::new("clone", options, handler).unwrap();
    let items = (1..=3).map(|n| Ok::<_, tonic::Status>(BadClone(n)));
    let summary = pipeline.run(futures::stream::iter(items)).await;
    assert_eq!((summary.succeeded, summary.failed), (2, 1));
    let failure = &summary.failures[0];
    assert_eq!((failure.seq, failure.kind), (2, FailureKind::Internal));
    assert!(
        failure.error.contains("clone bug on item 2"),
        "{}",
        failure.error
    );
    assert_eq!(summary.end, FailureKind::None, "the stream went on");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_its_message_and_the_key_goes_on() {
    let recorder = Recorder::new(Duration::ZERO);
    let pipeline = keyed(
        options(r#"{ "ordering": { "mode": "keyed_fifo" }, "retry": { "max_attempts": 3 } }"#),
        &recorder,
    );
    let summary = run_all(&pipeline, &[("a", 0), ("a", PANIC), ("a", 0)]).await;
    assert_eq!(
        (summary.succeeded, summary.failed, summary.retries),
        (2, 1, 0)
    );
    let failure = &summary.failures[0];
    assert_eq!(
        (failure.seq, failure.kind, failure.attempts),
        (2, FailureKind::Internal, 1)
    );
    assert!(
        failure.error.contains("handler bug on message 2"),
        "{}",
        failure.error
    );
    assert_eq!(recorder.seqs_of("a"), [1, 2, 3]);
    summary.status().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_key_function_rejects_only_its_message() {
    let recorder = Recorder::new(Duration::ZERO);
    // A computed key (`keyed_by`), under keyed FIFO.
    let pipeline = Pipeline::keyed_by("test", options(KEYED), recorder.handler(), |m: &Item| {
        assert!(m.0 != "bad", "no key for you");
        format!("key-{}", m.0)
    })
    .unwrap();
    let summary = run_all(&pipeline, &[("a", 0), ("bad", 0), ("a", 0)]).await;
    assert_eq!(kinds(&summary), [(2, FailureKind::Internal)]);
    assert_eq!(summary.succeeded, 2);
    assert_eq!(recorder.seqs_of("key-a"), [1, 3]);
}

/// Runs `stream` through `pipeline` in a task of its own.
fn spawn_run(
    pipeline: &Pipeline<Item>,
    stream: impl futures::Stream<Item = Result<Item, tonic::Status>> + Send + 'static,
) -> tokio::task::JoinHandle<Summary> {
    let pipeline = pipeline.clone();
    tokio::spawn(async move { pipeline.run(stream).await })
}

const KEYED: &str = r#"{ "ordering": { "mode": "keyed_fifo" } }"#;

/// Every message read is accounted for, once: succeeded, failed or rejected.
fn assert_accounted(summary: &Summary) {
    assert_eq!(
        summary.received,
        summary.succeeded + summary.failed + summary.rejected,
        "{summary:?}"
    );
}

/// A stream already holding one message (that succeeds) per key in `keys`, left open.
fn feed(
    keys: &[&str],
) -> (
    mpsc::UnboundedSender<Result<Item, tonic::Status>>,
    impl futures::Stream<Item = Result<Item, tonic::Status>> + Send,
) {
    let (tx, stream) = channel();
    for key in keys {
        tx.send(Ok(((*key).to_owned(), 0))).unwrap();
    }
    (tx, stream)
}

/// A stream the test feeds by hand, left open until the sender is dropped.
fn channel() -> (
    mpsc::UnboundedSender<Result<Item, tonic::Status>>,
    impl futures::Stream<Item = Result<Item, tonic::Status>> + Send,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio_stream_like(rx))
}

fn tokio_stream_like(
    mut rx: mpsc::UnboundedReceiver<Result<Item, tonic::Status>>,
) -> impl futures::Stream<Item = Result<Item, tonic::Status>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(start_paused = true)]
async fn shutdown_rejects_waiting_and_new_messages_and_lets_running_ones_finish() {
    let recorder = Recorder::new(Duration::from_secs(1));
    let pipeline = Pipeline::new(
        "test",
        options(r#"{ "shutdown": { "grace_period": "10s" } }"#),
        recorder.handler(),
    )
    .unwrap();
    let (tx, stream) = channel();
    for _ in 0..5 {
        tx.send(Ok((String::new(), 0))).unwrap();
    }
    let run = spawn_run(&pipeline, stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let shutdown = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(pipeline.is_shutting_down());
    tx.send(Ok((String::new(), 0))).unwrap();
    let summary = run.await.unwrap();
    shutdown.await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500),
        "the running message finished"
    );
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        kinds(&summary),
        [2, 3, 4, 5, 6].map(|seq| (seq, FailureKind::Shutdown)),
        "waiting and new messages rejected"
    );
    assert_eq!(
        summary.status().unwrap_err().code(),
        tonic::Code::Unavailable
    );
}

#[tokio::test(start_paused = true)]
async fn drain_on_close_runs_the_waiting_messages_within_the_grace_period() {
    let recorder = Recorder::new(Duration::from_secs(1));
    let pipeline = Pipeline::new(
        "test",
        options(r#"{ "shutdown": { "grace_period": "2600ms", "drain_on_close": true } }"#),
        recorder.handler(),
    )
    .unwrap();
    let (tx, stream) = channel();
    for _ in 0..5 {
        tx.send(Ok((String::new(), 0))).unwrap();
    }
    let run = spawn_run(&pipeline, stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    pipeline.shutdown().await;
    let summary = run.await.unwrap();
    // Message 1 ends at 1 s, 2 at 2 s, 3 at 3 s; the grace period ends at 3.1 s (0.5 +
    // 2.6): 4 is cut off while running, 5 never started.
    assert_eq!(started.elapsed(), Duration::from_millis(2600));
    assert_eq!(summary.succeeded, 3);
    assert_eq!(
        kinds(&summary),
        [(4, FailureKind::Shutdown), (5, FailureKind::Shutdown)]
    );
    assert_eq!(
        (summary.failed, summary.rejected),
        (1, 1),
        "4 ran, 5 did not"
    );
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_stream_cancels_its_running_messages() {
    let recorder = Recorder::new(Duration::from_secs(60));
    let pipeline = keyed(options(KEYED), &recorder);
    let (tx, stream) = feed(&["a", "b", "a"]);
    let run = spawn_run(&pipeline, stream);
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(Err(tonic::Status::cancelled("client went away")))
        .unwrap();
    let summary = run.await.unwrap();
    assert_eq!(summary.end, FailureKind::ContextCancelled);
    assert_eq!(summary.status().unwrap_err().code(), tonic::Code::Cancelled);
    assert_eq!(
        kinds(&summary),
        [1, 2, 3].map(|seq| (seq, FailureKind::ContextCancelled))
    );
    assert_eq!(
        recorder.trace.lock().unwrap().now_running,
        0,
        "nothing left running"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_cancels_everything() {
    let recorder = Recorder::new(Duration::from_secs(60));
    let pipeline = keyed(options(KEYED), &recorder);
    let (_tx, stream) = feed(&["a", "b"]);
    let run = spawn_run(&pipeline, stream);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recorder.trace.lock().unwrap().now_running, 2);
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    assert_eq!(recorder.trace.lock().unwrap().now_running, 0);
    pipeline.shutdown().await;
}

#[test]
fn bad_options_name_their_field() {
    let recorder = Recorder::new(Duration::ZERO);
    let err = Pipeline::new("test", options(KEYED), recorder.handler()).unwrap_err();
    assert_eq!(err.field(), "ordering.mode");
    for (json, field) in [
        (
            r#"{ "backpressure": { "capacity": 1, "max_wait": "0s" } }"#,
            "backpressure.max_wait",
        ),
        (
            r#"{ "backpressure": { "policy": "sometimes" } }"#,
            "backpressure.policy",
        ),
        (r#"{ "ordering": { "mode": "lifo" } }"#, "ordering.mode"),
        (
            r#"{ "shutdown": { "grace_period": "soon" } }"#,
            "shutdown.grace_period",
        ),
    ] {
        assert_eq!(
            Options::from_json(json).unwrap_err().field(),
            field,
            "{json}"
        );
    }
}

#[test]
fn failure_kinds_map_as_core_does() {
    for kind in FailureKind::ALL {
        if let Some(rejection) = kind.rejection_kind() {
            assert_eq!(
                i32::from(kind.code()),
                rejection.grpc_code() as i32,
                "{kind}"
            );
        }
        assert!(!(kind.is_terminal() && kind.is_retryable()), "{kind}");
        assert!(!(kind.is_terminal() && kind.breaks_ordering()), "{kind}");
    }
    assert_eq!(FailureKind::None.code(), tonic::Code::Ok);
    assert!(FailureKind::HandlerError.is_retryable());
    assert!(FailureKind::Shutdown.is_terminal());
}

/// How a random case ends: the stream closes, or the pipeline shuts down (draining).
#[derive(Debug, Clone)]
enum Ending {
    Close,
    Shutdown { after_ms: u64 },
}

/// A random case: messages, attempts, how it ends, keyed or not, and the policy and ordering
/// capacity.
type Case = (
    Vec<(u8, u32, u64)>,
    u32,
    Ending,
    bool,
    (&'static str, usize),
);

fn case() -> impl Strategy<Value = Case> {
    (
        // (key, failing attempts, arrival gap in ms)
        prop::collection::vec(
            (
                0u8..4,
                prop_oneof![6 => Just(0u32), 2 => 1u32..3, 1 => Just(u32::MAX), 1 => Just(PANIC)],
                0u64..5,
            ),
            // Up to 100: past a lane's first chunk (32 messages) in either mode.
            1..100,
        ),
        0u32..4,
        prop_oneof![
            Just(Ending::Close),
            (0u64..60).prop_map(|after_ms| Ending::Shutdown { after_ms })
        ],
        any::<bool>(),
        (
            prop_oneof![Just("queue"), Just("hard_reject"), Just("soft_allow")],
            prop_oneof![Just(0usize), 1usize..4],
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No two messages of one key ever run at once or out of order; every message is
    /// accounted for, and one skipped while its key went on is reported with a kind that
    /// breaks ordering; with drain-on-close and a long grace period, shutdown loses no
    /// admitted message.
    #[test]
    fn per_key_order_holds_and_nothing_is_lost(
        (messages, max_attempts, ending, keyed_mode, (policy, ordering_capacity)) in case()
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let recorder = Recorder::new(Duration::from_millis(3));
            let mode = if keyed_mode { "keyed_fifo" } else { "fifo" };
            let pipeline = keyed(
                options(&format!(
                    r#"{{ "ordering": {{ "mode": "{mode}", "capacity": {ordering_capacity} }},
                         "backpressure": {{ "policy": "{policy}", "capacity": 2 }},
                         "retry": {{ "max_attempts": {max_attempts}, "backoff": "1ms" }},
                         "shutdown": {{ "grace_period": "1h", "drain_on_close": true }} }}"#
                )),
                &recorder,
            );
            let (tx, stream) = channel();
            let feeder = tokio::spawn({
                let messages = messages.clone();
                async move {
                    for (key, failing, gap) in messages {
                        tokio::time::sleep(Duration::from_millis(gap)).await;
                        if tx.send(Ok((format!("k{key}"), failing))).is_err() {
                            return;
                        }
                    }
                }
            });
            let run = spawn_run(&pipeline, stream);
            if let Ending::Shutdown { after_ms } = ending {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                pipeline.shutdown().await;
            }
            feeder.await.unwrap();
            let summary = run.await.unwrap();

            let trace = recorder.trace.lock().unwrap();
            assert!(trace.max_per_key <= 1, "two messages of one key ran at once");
            if !keyed_mode {
                assert!(trace.max_running <= 1, "global FIFO ran two messages at once");
            }
            // Per lane, attempts never overlap and messages start in sequence order.
            let mut lanes: HashMap<String, Vec<&Attempt>> = HashMap::new();
            for attempt in &trace.attempts {
                let lane = if keyed_mode { attempt.0.clone() } else { String::new() };
                lanes.entry(lane).or_default().push(attempt);
            }
            for (lane, attempts) in &lanes {
                for pair in attempts.windows(2) {
                    assert!(pair[0].1 <= pair[1].1, "lane {lane:?} ran {} after {}", pair[1].1, pair[0].1);
                    assert!(pair[0].4 <= pair[1].3, "lane {lane:?} overlapped");
                }
            }
            // Every message is accounted for, once.
            assert_accounted(&summary);
            assert_eq!(summary.failures.len() as u64, summary.failed + summary.rejected);
            // A message that did not complete while a later message of its lane ran is
            // reported with a kind that breaks ordering, and the summary says so.
            let lane_of = |key: &str| if keyed_mode { key.to_owned() } else { String::new() };
            for failure in &summary.failures {
                let later_ran = trace
                    .attempts
                    .iter()
                    .any(|a| lane_of(&a.0) == lane_of(&failure.key) && a.1 > failure.seq);
                if later_ran {
                    assert!(failure.kind.breaks_ordering(), "{failure:?} skipped, its lane went on");
                    assert!(summary.ordering_broken, "{failure:?} broke the order unreported");
                }
            }
            // Every message that did not succeed is listed, once.
            let mut listed: Vec<u64> = summary.failures.iter().map(|f| f.seq).collect();
            listed.dedup();
            assert_eq!(listed.len(), summary.failures.len(), "a message listed twice");
            // Draining with a long grace period loses nothing admitted: the only shutdown
            // failures are messages that arrived after shutdown began (never admitted).
            for failure in summary.failures.iter().filter(|f| f.kind == FailureKind::Shutdown) {
                assert_eq!(failure.attempts, 0, "an admitted message was cut: {failure:?}");
            }
            if matches!(ending, Ending::Close) {
                assert_eq!(summary.received, messages.len() as u64);
                assert_eq!(summary.end, FailureKind::None);
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn many_streams_share_a_pipeline() {
    let recorder = Recorder::new(Duration::from_millis(1));
    let pipeline = keyed(options(KEYED), &recorder);
    let done = Arc::new(AtomicUsize::new(0));
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (pipeline, done) = (pipeline.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let stream = futures::stream::iter(items(&[("a", 0), ("b", 0), ("a", 0)]));
                let summary = pipeline.run(stream.boxed()).await;
                done.fetch_add(summary.succeeded as usize, Ordering::SeqCst);
            })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 12);
}

#[tokio::test(start_paused = true)]
async fn a_message_waiting_for_a_slot_when_the_grace_period_ends_is_reported() {
    let recorder = Recorder::new(Duration::from_secs(10));
    let pipeline = keyed(
        options(
            r#"{ "ordering": { "mode": "keyed_fifo" },
                 "backpressure": { "policy": "queue", "capacity": 1 },
                 "shutdown": { "grace_period": "1s" } }"#,
        ),
        &recorder,
    );
    let (tx, stream) = feed(&["a", "b"]);
    let run = spawn_run(&pipeline, stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    pipeline.shutdown().await;
    let summary = run.await.unwrap();
    // a was cut while running; b never got its slot: both are accounted for.
    assert_accounted(&summary);
    assert_eq!(
        kinds(&summary),
        [(1, FailureKind::Shutdown), (2, FailureKind::Shutdown)]
    );
    assert_eq!((summary.failed, summary.rejected), (1, 1));
    assert_eq!(summary.failures[1].attempts, 0);
    assert_eq!(summary.end, FailureKind::Shutdown);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_terminal_failure_from_the_handler_ends_the_stream() {
    let handler = service_fn(move |m: Message<Item>| async move {
        if m.seq == 2 {
            return Err::<(), BoxError>(Box::new(tonic::Status::cancelled("client gone")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    });
    let pipeline = Pipeline::keyed(
        "test",
        options(r#"{ "ordering": { "mode": "keyed_fifo" }, "retry": { "max_attempts": 3 } }"#),
        handler,
        |m: &Item| m.0.as_str(),
    )
    .unwrap();
    let (tx, stream) = channel();
    for key in ["a", "b", "a", "c"] {
        tx.send(Ok((key.to_owned(), 0))).unwrap();
    }
    let summary = spawn_run(&pipeline, stream).await.unwrap();
    assert_eq!(summary.end, FailureKind::ContextCancelled);
    assert_eq!(summary.status().unwrap_err().code(), tonic::Code::Cancelled);
    let second = &summary.failures[1];
    assert_eq!(
        (second.seq, second.kind, second.attempts),
        (2, FailureKind::ContextCancelled, 1),
        "ended the stream, not retried"
    );
    assert_eq!(summary.succeeded, 0, "the others were cut");
    assert_accounted(&summary);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_lets_admitted_messages_finish_and_keeps_its_code() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let pipeline = keyed(options(KEYED), &recorder);
    let (tx, stream) = feed(&["a", "b"]);
    tx.send(Err(tonic::Status::out_of_range("message too large")))
        .unwrap();
    let summary = spawn_run(&pipeline, stream).await.unwrap();
    assert_eq!((summary.received, summary.succeeded), (2, 2));
    assert_eq!(summary.end, FailureKind::Internal);
    let status = summary.status().unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains("message too large"), "{status:?}");
}

/// On a multi-threaded runtime (real time; no timing is asserted, only invariants): four
/// streams of 2,000 messages over 20 keys each, with a bounded ordering queue and a queue
/// policy, keep every key in order with no overlap and account for every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_many_threads_keys_stay_in_order_and_every_message_is_counted() {
    #[derive(Default)]
    struct Seen {
        running: HashMap<String, bool>,
        last: HashMap<String, u64>,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = service_fn({
        let seen = Arc::clone(&seen);
        move |m: Message<Item>| {
            let seen = Arc::clone(&seen);
            async move {
                let key = m.key.to_string();
                {
                    let mut s = seen.lock().unwrap();
                    if s.running.insert(key.clone(), true) == Some(true) {
                        s.violations.push(format!("{key} overlapped at {}", m.seq));
                    }
                    let last = s.last.insert(key.clone(), m.seq).unwrap_or(0);
                    if last >= m.seq {
                        s.violations.push(format!("{key}: {} after {last}", m.seq));
                    }
                }
                tokio::task::yield_now().await;
                seen.lock().unwrap().running.insert(key, false);
                Ok::<_, BoxError>(())
            }
        }
    });
    let pipeline = Pipeline::keyed(
        "threads",
        options(
            r#"{ "ordering": { "mode": "keyed_fifo", "capacity": 1000 },
                 "backpressure": { "policy": "queue", "capacity": 4 } }"#,
        ),
        handler,
        |m: &Item| m.0.as_str(),
    )
    .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|run| {
            let list: Vec<Result<Item, tonic::Status>> = (0..2000u32)
                .map(|i| Ok((format!("r{run}-k{}", (i * 7) % 20), 0)))
                .collect();
            spawn_run(&pipeline, futures::stream::iter(list))
        })
        .collect();
    let mut processed = 0;
    for run in runs {
        let summary = run.await.unwrap();
        assert_eq!(summary.received, 2000);
        assert_eq!(
            summary.received,
            summary.succeeded + summary.failed + summary.rejected,
            "{summary:?}"
        );
        assert_eq!(summary.failed, 0);
        assert!(
            summary
                .failures
                .iter()
                .all(|f| f.kind == FailureKind::Ordering)
        );
        processed += summary.succeeded;
    }
    assert!(processed >= 4 * 1000, "most messages ran: {processed}");
    let seen = seen.lock().unwrap();
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
}
