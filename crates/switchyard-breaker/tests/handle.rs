//! The breaker handle through the public API: state, snapshots, forcing and releasing,
//! resetting, events, `watch`, `follow`, and the metrics the breaker records.

mod support;

use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use serde_json::json;
use switchyard_breaker::{BreakerHandle, BreakerState, CircuitBreakerConfig, Trip};
use tokio::sync::watch;
use tokio::time::{Instant, advance, timeout};

use support::{
    breaker, breaker_open, call, fail_times, is_refused, is_send_sync_static, ms, seed_config,
};
use switchyard_core::test_util::Recorded;

/// Waits (in paused time, so at no cost) until the breaker's state next changes.
async fn next_state(states: &mut watch::Receiver<BreakerState>) -> BreakerState {
    timeout(Duration::from_secs(1), states.changed())
        .await
        .expect("the state changed")
        .expect("the breaker is alive");
    *states.borrow_and_update()
}

// === BreakerState and snapshots ===

#[tokio::test(start_paused = true)]
async fn state_follows_the_breaker_through_its_cycle() {
    let (mut svc, backend, handle) = breaker(seed_config());
    assert_eq!(handle.name(), "payments");
    assert_eq!(handle.state(), BreakerState::Closed);

    fail_times(&mut svc, &backend, 2).await;
    assert_eq!(handle.state(), BreakerState::Open);

    advance(ms(100)).await;
    assert_eq!(
        handle.state(),
        BreakerState::Open,
        "half-opening waits for the next caller"
    );
    call(&mut svc, 1).await.unwrap();
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    call(&mut svc, 2).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_the_counters_and_serialises_to_json() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let closed = handle.snapshot();
    assert_eq!(closed.open_remaining, None);
    assert_eq!(
        (closed.window.calls, closed.rejected, closed.opened),
        (0, 0, 0)
    );

    fail_times(&mut svc, &backend, 2).await;
    assert!(is_refused(&call(&mut svc, 1).await));
    advance(ms(40)).await;
    let snapshot = handle.snapshot();

    assert_eq!(snapshot.name, "payments");
    assert_eq!(snapshot.state, BreakerState::Open);
    assert_eq!((snapshot.window.calls, snapshot.window.failures), (2, 2));
    assert_eq!(snapshot.rejected, 1);
    assert_eq!(snapshot.opened, 1);
    assert_eq!(snapshot.open_remaining, Some(ms(60)));
    assert_eq!(
        serde_json::to_value(&snapshot).unwrap(),
        json!({
            "name": "payments",
            "state": "open",
            "window": {
                "calls": 2,
                "failures": 2,
                "slow_calls": 0,
                "failure_rate": null,
                "slow_call_rate": null
            },
            "rejected": 1,
            "opened": 1,
            "open_remaining": "60ms"
        })
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_of_a_rate_window_reports_its_rates() {
    let trip = Trip::count_window(4, 75.0).with_minimum_calls(4);
    let (mut svc, backend, handle) = breaker(CircuitBreakerConfig::new(trip.into()));
    fail_times(&mut svc, &backend, 1).await;
    let window = handle.snapshot().window;
    assert_eq!(
        (window.calls, window.failure_rate),
        (1, None),
        "below the minimum"
    );

    for i in 0..3 {
        call(&mut svc, i).await.unwrap();
    }

    let window = handle.snapshot().window;
    assert_eq!((window.calls, window.failures), (4, 1));
    assert_eq!(window.failure_rate, Some(25.0));
    assert_eq!(window.slow_call_rate, Some(0.0));
}

// === Forcing, releasing, resetting ===

#[tokio::test(start_paused = true)]
async fn force_open_refuses_every_call_without_a_retry_hint_until_released() {
    let (mut svc, backend, handle) = breaker(seed_config());

    handle.force_open();

    assert_eq!(handle.state(), BreakerState::ForcedOpen);
    let err = call(&mut svc, 1).await.expect_err("held open");
    assert_eq!(breaker_open(&err).retry_after(), None);
    advance(Duration::from_secs(3600)).await;
    assert!(
        is_refused(&call(&mut svc, 1).await),
        "no wait ends a forced open"
    );
    assert_eq!(handle.snapshot().open_remaining, None);
    assert_eq!(backend.calls(), 0);

    handle.release();

    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn force_closed_lets_failures_through_without_tripping() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    assert_eq!(handle.state(), BreakerState::Open);

    handle.force_closed();
    fail_times(&mut svc, &backend, 10).await;

    assert_eq!(handle.state(), BreakerState::ForcedClosed);
    assert_eq!(backend.calls(), 12, "every call reached the backend");

    handle.release();
    assert_eq!(handle.state(), BreakerState::Closed);
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "the run restarted at release"
    );
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn release_leaves_the_automatic_states_alone() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let mut events = handle.subscribe();
    fail_times(&mut svc, &backend, 2).await;

    handle.release();

    assert_eq!(handle.state(), BreakerState::Open);
    assert!(is_refused(&call(&mut svc, 1).await));
    assert_eq!(events.try_recv().unwrap().to, BreakerState::Open);
    assert!(events.try_recv().is_err(), "release changed nothing");
}

#[tokio::test(start_paused = true)]
async fn reset_forgets_the_failure_run_of_a_closed_breaker() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(handle.snapshot().window.failures, 1);

    handle.reset();

    assert_eq!(handle.snapshot().window.failures, 0);
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn reset_closes_an_open_breaker_at_once() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;

    handle.reset();

    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.window.failures, snapshot.opened), (0, 1));
}

// === Events ===

#[tokio::test(start_paused = true)]
async fn subscribers_receive_every_state_change_in_order() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let start = Instant::now();
    let mut events = handle.subscribe();

    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    fail_times(&mut svc, &backend, 1).await;
    advance(ms(100)).await;
    call(&mut svc, 1).await.unwrap();
    call(&mut svc, 2).await.unwrap();
    handle.force_open();

    let mut seen = Vec::new();
    while let Ok(change) = events.try_recv() {
        assert_eq!(&*change.breaker, "payments");
        seen.push((change.from, change.to, change.at - start));
    }
    assert_eq!(
        seen,
        [
            (BreakerState::Closed, BreakerState::Open, ms(0)),
            (BreakerState::Open, BreakerState::HalfOpen, ms(100)),
            (BreakerState::HalfOpen, BreakerState::Open, ms(100)),
            (BreakerState::Open, BreakerState::HalfOpen, ms(200)),
            (BreakerState::HalfOpen, BreakerState::Closed, ms(200)),
            (BreakerState::Closed, BreakerState::ForcedOpen, ms(200)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn watch_sees_the_current_state() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let mut states = handle.watch();
    assert_eq!(*states.borrow(), BreakerState::Closed);

    fail_times(&mut svc, &backend, 2).await;

    assert_eq!(next_state(&mut states).await, BreakerState::Open);
    assert_eq!(
        *handle.watch().borrow(),
        BreakerState::Open,
        "a late watcher sees the state now"
    );
}

#[tokio::test(start_paused = true)]
async fn follow_holds_the_breaker_open_while_the_signal_is_true() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let mut states = handle.watch();
    let (switch, signal) = watch::channel(false);
    let task = handle.follow(signal);
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), BreakerState::Closed);

    switch.send(true).unwrap();
    assert_eq!(next_state(&mut states).await, BreakerState::ForcedOpen);
    let err = call(&mut svc, 1)
        .await
        .expect_err("held open by the signal");
    assert_eq!(breaker_open(&err).retry_after(), None);

    switch.send(false).unwrap();
    assert_eq!(next_state(&mut states).await, BreakerState::Closed);
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
    assert_eq!(backend.calls(), 1);

    drop(switch);
    timeout(Duration::from_secs(1), task)
        .await
        .expect("the task ends with its sender")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn follow_forces_open_at_once_when_the_signal_starts_true() {
    let (_svc, _backend, handle) = breaker(seed_config());
    let mut states = handle.watch();
    let (_switch, signal) = watch::channel(true);

    let _task = handle.follow(signal);

    assert_eq!(next_state(&mut states).await, BreakerState::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn follow_does_not_close_a_breaker_that_opened_by_itself() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    let (switch, signal) = watch::channel(false);
    let _task = handle.follow(signal);

    switch.send(false).unwrap();
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }

    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn follow_does_not_release_a_hold_it_did_not_place() {
    let (_svc, _backend, handle) = breaker(seed_config());
    handle.force_open();
    let (_switch, signal) = watch::channel(false);

    let _task = handle.follow(signal);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }

    assert_eq!(
        handle.state(),
        BreakerState::ForcedOpen,
        "the operator's hold stands"
    );
}

// === Metrics ===

const CALLS: &str = "switchyard_breaker_calls_total";
const STATE: &str = "switchyard_breaker_state";
const TRANSITIONS: &str = "switchyard_breaker_transitions_total";

fn calls(outcome: &'static str) -> [(&'static str, &'static str); 2] {
    [("breaker", "payments"), ("outcome", outcome)]
}

#[test]
fn metrics_count_calls_by_outcome_and_track_the_state() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let breaker_label = [("breaker", "payments")];
    let transition = [("breaker", "payments"), ("from", "closed"), ("to", "open")];
    let forced = [
        ("breaker", "payments"),
        ("from", "open"),
        ("to", "forced_open"),
    ];

    // Handles are registered when the layer is built, so the recorder must be in place then.
    let (opened, held_open) = metrics::with_local_recorder(&recorder, || {
        let (mut svc, backend, handle) = breaker(seed_config());
        futures::executor::block_on(async {
            call(&mut svc, 1).await.unwrap();
            fail_times(&mut svc, &backend, 2).await;
            assert!(is_refused(&call(&mut svc, 2).await));
        });
        let opened = Recorded::take(&snapshotter);
        handle.force_open();
        (opened, Recorded::take(&snapshotter))
    });

    assert_eq!(opened.counter(CALLS, &calls("success")), Some(1));
    assert_eq!(opened.counter(CALLS, &calls("failure")), Some(2));
    assert_eq!(opened.counter(CALLS, &calls("rejected")), Some(1));
    assert_eq!(opened.counter(CALLS, &calls("ignored")), Some(0));
    assert_eq!(
        opened.gauge(STATE, &breaker_label),
        Some(BreakerState::Open.as_gauge())
    );
    assert_eq!(opened.counter(TRANSITIONS, &transition), Some(1));

    assert_eq!(
        held_open.gauge(STATE, &breaker_label),
        Some(BreakerState::ForcedOpen.as_gauge())
    );
    assert_eq!(held_open.counter(TRANSITIONS, &forced), Some(1));
    assert_eq!(
        held_open.counter(CALLS, &calls("success")),
        Some(0),
        "no call since"
    );
}

#[test]
fn state_gauge_codes_are_stable() {
    let codes = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::ForcedClosed,
    ]
    .map(BreakerState::as_gauge);
    assert_eq!(codes, [0.0, 1.0, 2.0, 3.0, 4.0]);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_slow_calls() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let trip = Trip::count_window(10, 50.0).with_slow_calls(ms(50), 50.0);
    let (mut svc, backend, _) = breaker(CircuitBreakerConfig::new(trip.into()));

    backend.delay(ms(80));
    call(&mut svc, 1).await.unwrap();
    backend.delay(Duration::ZERO);
    call(&mut svc, 2).await.unwrap();

    let recorded = Recorded::take(&snapshotter);
    let slow = recorded.counter(
        "switchyard_breaker_slow_calls_total",
        &[("breaker", "payments")],
    );
    assert_eq!(slow, Some(1));
    assert_eq!(recorded.counter(CALLS, &calls("success")), Some(2));
}

/// Compiles only if handles, their events and snapshots can move to other tasks and threads.
#[test]
fn handles_events_and_snapshots_are_send_sync_and_static() {
    is_send_sync_static::<BreakerHandle>();
    is_send_sync_static::<switchyard_breaker::StateChange>();
    is_send_sync_static::<switchyard_breaker::BreakerSnapshot>();
}
