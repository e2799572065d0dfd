//! Backpressure policies, on paused tokio time.

use std::time::Duration;

use switchyard_stream::FailureKind;
use tokio::time::Instant;

mod support;
use support::*;

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
