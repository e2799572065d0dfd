//! Ordering: global FIFO, keyed FIFO, and the bounded queue of waiting messages.

use std::time::Duration;

use switchyard_stream::{FailureKind, Pipeline, StreamConfig};
use tokio::time::Instant;

mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn fifo_runs_one_message_at_a_time_in_stream_order() {
    let recorder = Recorder::new(Duration::from_millis(10));
    let pipeline = Pipeline::new("test", StreamConfig::default(), recorder.handler()).unwrap();
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
