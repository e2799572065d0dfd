//! Shutdown, grace period, drain on close, cancellation, and how a stream ends.

use std::time::Duration;

use switchyard_stream::{FailureKind, Message, Pipeline};
use tokio::time::Instant;
use tower::{BoxError, service_fn};

mod support;
use support::*;

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
