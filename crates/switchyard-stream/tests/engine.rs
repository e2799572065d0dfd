//! The engine: retries with backoff, the item's copies, and panics caught per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchyard_stream::{FailureKind, Message, Pipeline, StreamConfig};
use tokio::time::Instant;
use tower::{BoxError, service_fn};

mod support;
use support::*;

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
    let summary = run_all(&keyed(StreamConfig::default(), &recorder), &[("a", 1)]).await;
    assert_eq!((summary.failed, summary.retries), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_growing_backoff_doubles_the_pause_before_each_retry_up_to_its_max() {
    let recorder = Recorder::new(Duration::ZERO);
    let pipeline = keyed(
        options(
            r#"{ "retry": { "max_attempts": 5,
                 "backoff": { "initial": "10ms", "multiplier": 2.0, "max": "30ms" } } }"#,
        ),
        &recorder,
    );
    let started = Instant::now();
    // Fails four times, succeeds on the fifth attempt: pauses of 10, 20, 30 and 30 ms.
    let summary = run_all(&pipeline, &[("a", 4)]).await;
    assert_eq!((summary.succeeded, summary.retries), (1, 4));
    assert_eq!(started.elapsed(), Duration::from_millis(90));

    // Each message walks its own backoff: the second starts again from 10 ms.
    let started = Instant::now();
    let summary = run_all(&pipeline, &[("a", 1), ("b", 2)]).await;
    assert_eq!((summary.succeeded, summary.retries), (2, 3));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(40),
        "in FIFO order: a's 10 ms, then b's 10 + 20 ms (not 20 + 30 ms, carried on from a's)"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_keeps_each_pause_within_its_range() {
    let recorder = Recorder::new(Duration::ZERO);
    let pipeline = keyed(
        options(r#"{ "retry": { "max_attempts": 3, "backoff": "100ms", "jitter": "equal" } }"#),
        &recorder,
    );
    let started = Instant::now();
    let summary = run_all(&pipeline, &[("a", 2)]).await;
    assert_eq!((summary.succeeded, summary.retries), (1, 2));
    // Two pauses, each in [50 ms, 100 ms].
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&elapsed),
        "{elapsed:?}"
    );
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
