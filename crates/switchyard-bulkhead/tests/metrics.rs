//! The metrics a bulkhead records, read from a `metrics_util` debugging recorder installed
//! while the bulkhead is built and used: refusals by reason, slots in flight, waiters queued,
//! admissions over capacity and queue waits.

mod support;

use std::task::Poll;

use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use switchyard_bulkhead::{AdmissionController, BulkheadConfig, BulkheadPolicy, FullReason};
use tokio::time::advance;
use tower::{Service, ServiceExt};
use tower_test::mock;

use support::{NAME, bulkhead, call, controller, ms, paused_runtime, poll_once, queue, refusal};
use switchyard_core::test_util::Recorded;

const REJECTED: &str = "switchyard_bulkhead_rejected_total";
const IN_FLIGHT: &str = "switchyard_bulkhead_in_flight";
const QUEUED: &str = "switchyard_bulkhead_queued";
const OVER_CAPACITY: &str = "switchyard_bulkhead_over_capacity_total";
const WAIT: &str = "switchyard_bulkhead_wait_seconds";

const LEDGER: [(&str, &str); 1] = [("bulkhead", NAME)];

fn rejected(bulkhead: &'static str, reason: &'static str) -> [(&'static str, &'static str); 2] {
    [("bulkhead", bulkhead), ("reason", reason)]
}

/// Runs `scenario` with a fresh debugging recorder installed on this thread, so that the
/// bulkheads it builds register their metrics there; it takes its own snapshots.
fn with_recorder<T>(scenario: impl FnOnce(&Snapshotter) -> T) -> T {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || scenario(&snapshotter))
}

#[test]
fn refusals_are_counted_by_bulkhead_and_reason() {
    let recorded = with_recorder(|snapshotter| {
        let orders = AdmissionController::new(
            "orders",
            &BulkheadConfig::new(1, BulkheadPolicy::HardReject),
        )
        .expect("a valid config");
        paused_runtime().block_on(async {
            let _order = orders.try_acquire().unwrap();
            for _ in 0..2 {
                assert!(orders.try_acquire().is_err());
            }

            let (mut svc, _, controller) = bulkhead(1, queue(1, 100));
            let _held = controller.try_acquire().unwrap();
            assert_eq!(
                controller.try_acquire().unwrap_err().reason(),
                FullReason::Full
            );
            let mut waiting = mock::Spawn::new(svc.clone());
            assert!(waiting.poll_ready::<u32>().is_pending());
            assert_eq!(refusal(&call(&mut svc, 1).await), FullReason::QueueFull);
            advance(ms(100)).await;
            assert!(waiting.poll_ready::<u32>().is_ready());
            assert_eq!(refusal(&waiting.call(2).await), FullReason::WaitExpired);
        });
        Recorded::take(snapshotter)
    });

    assert_eq!(recorded.counter(REJECTED, &rejected(NAME, "full")), Some(1));
    assert_eq!(
        recorded.counter(REJECTED, &rejected(NAME, "queue_full")),
        Some(1)
    );
    assert_eq!(
        recorded.counter(REJECTED, &rejected(NAME, "wait_expired")),
        Some(1)
    );
    assert_eq!(
        recorded.counter(REJECTED, &rejected("orders", "full")),
        Some(2)
    );
    assert_eq!(
        recorded.counter(REJECTED, &rejected("orders", "queue_full")),
        Some(0)
    );
}

#[test]
fn in_flight_gauge_counts_held_slots_and_not_refusals() {
    let recorded = with_recorder(|snapshotter| {
        paused_runtime().block_on(async {
            let (mut svc, backend, controller) = bulkhead(3, BulkheadPolicy::HardReject);
            let _permit = controller.try_acquire().unwrap();
            let released = controller.try_acquire().unwrap();
            backend.hang(true);
            svc.ready().await.unwrap();
            let _hanging = svc.call(1);
            drop(released);
            let _second = controller.try_acquire().unwrap();
            assert!(controller.try_acquire().is_err());
            assert!(call(&mut svc, 2).await.is_err());

            assert_eq!(controller.stats().in_flight, 3);
            Recorded::take(snapshotter)
        })
    });

    assert_eq!(recorded.gauge(IN_FLIGHT, &LEDGER), Some(3.0));
}

#[test]
fn in_flight_and_queued_gauges_return_to_zero_when_every_slot_is_given_back() {
    let recorded = with_recorder(|snapshotter| {
        paused_runtime().block_on(async {
            let (mut svc, backend, controller) = bulkhead(1, queue(2, 100));
            // Admitted at once and completed.
            assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
            let held = controller.try_acquire().unwrap();
            // Queued, then admitted...
            let mut waiting = mock::Spawn::new(svc.clone());
            assert!(waiting.poll_ready::<u32>().is_pending());
            // ...while another waiter gives up.
            let mut cancelled = Box::pin(controller.acquire());
            assert!(poll_once(&mut cancelled).is_pending());
            drop(cancelled);
            drop(held);
            assert!(waiting.poll_ready::<u32>().is_ready());
            // The admitted call is dropped in flight.
            backend.hang(true);
            drop(waiting.call(2));

            let stats = controller.stats();
            assert_eq!((stats.in_flight, stats.queued), (0, 0));
            Recorded::take(snapshotter)
        })
    });

    assert_eq!(recorded.gauge(IN_FLIGHT, &LEDGER), Some(0.0));
    assert_eq!(recorded.gauge(QUEUED, &LEDGER), Some(0.0));
}

#[test]
fn queued_gauge_counts_waiters_and_not_the_ones_refused_or_cancelled() {
    let recorded = with_recorder(|snapshotter| {
        paused_runtime().block_on(async {
            let controller = controller(1, queue(2, 100));
            let _held = controller.try_acquire().unwrap();
            let mut first = Box::pin(controller.acquire());
            let mut second = Box::pin(controller.acquire());
            assert!(poll_once(&mut first).is_pending());
            assert!(poll_once(&mut second).is_pending());
            let refused = poll_once(&mut Box::pin(controller.acquire()));
            assert!(matches!(refused, Poll::Ready(Err(_))));
            drop(first);

            assert_eq!(controller.stats().queued, 1);
            Recorded::take(snapshotter)
        })
    });

    assert_eq!(recorded.gauge(QUEUED, &LEDGER), Some(1.0));
}

#[test]
fn over_capacity_counter_counts_admissions_beyond_the_limit() {
    let recorded = with_recorder(|snapshotter| {
        let soft = controller(1, BulkheadPolicy::SoftAllow);
        let signal = AdmissionController::new(
            "signal",
            &BulkheadConfig::new(2, BulkheadPolicy::SoftAllowWithSignal),
        )
        .expect("a valid config");
        let _soft: Vec<_> = (0..3).map(|_| soft.try_acquire().unwrap()).collect();
        let _signal: Vec<_> = (0..3).map(|_| signal.try_acquire().unwrap()).collect();
        Recorded::take(snapshotter)
    });

    assert_eq!(recorded.counter(OVER_CAPACITY, &LEDGER), Some(2));
    assert_eq!(
        recorded.counter(OVER_CAPACITY, &[("bulkhead", "signal")]),
        Some(1)
    );
    assert_eq!(
        recorded.gauge(IN_FLIGHT, &LEDGER),
        Some(3.0),
        "over-capacity admissions are in flight too"
    );
    assert_eq!(
        recorded.counter(REJECTED, &rejected(NAME, "full")),
        Some(0),
        "soft allow never refuses"
    );
}

#[test]
fn wait_histogram_records_each_queue_wait_in_seconds() {
    let recorded = with_recorder(|snapshotter| {
        paused_runtime().block_on(async {
            let controller = controller(1, queue(2, 100));
            let immediate = controller.acquire().await.expect("a free slot, no wait");
            let mut admitted = Box::pin(controller.acquire());
            let mut expired = Box::pin(controller.acquire());
            assert!(poll_once(&mut admitted).is_pending());
            assert!(poll_once(&mut expired).is_pending());

            advance(ms(40)).await;
            drop(immediate);
            let Poll::Ready(Ok(_slot)) = poll_once(&mut admitted) else {
                panic!("the freed slot went to the first waiter");
            };
            advance(ms(60)).await;
            assert!(matches!(poll_once(&mut expired), Poll::Ready(Err(_))));
            Recorded::take(snapshotter)
        })
    });

    assert_eq!(
        recorded.histogram(WAIT, &LEDGER),
        Some(vec![0.04, 0.1]),
        "one wait admitted after 40 ms, one refused after 100 ms, none for the free slot"
    );
}

#[test]
fn a_bulkhead_built_before_the_recorder_is_installed_records_nothing() {
    let controller = controller(1, BulkheadPolicy::HardReject);

    let recorded = with_recorder(|snapshotter| {
        let _held = controller.try_acquire().unwrap();
        assert!(controller.try_acquire().is_err());
        Recorded::take(snapshotter)
    });

    for name in [REJECTED, IN_FLIGHT, QUEUED, OVER_CAPACITY, WAIT] {
        assert!(!recorded.has(name), "{name} was recorded");
    }
}

#[test]
fn full_reason_labels_are_stable() {
    let labels = [
        FullReason::Full,
        FullReason::QueueFull,
        FullReason::WaitExpired,
    ]
    .map(FullReason::as_str);
    assert_eq!(labels, ["full", "queue_full", "wait_expired"]);
}
