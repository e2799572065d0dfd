//! The admission controller without tower: `try_acquire` and `acquire` under each policy, the
//! stats, the fairness and cancel safety of the queue, and a proptest of the queue's permit
//! accounting under random acquires, releases, cancels and time passing.

mod support;

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use switchyard_bulkhead::{BulkheadPolicy, FullReason, Permit};
use tokio::sync::mpsc;
use tokio::time::{Instant, advance};

use support::hooked::CounterHook;
use support::{NAME, controller, ms, paused_runtime, poll_once, queue};

// === Policies without a queue ===

#[test]
fn hard_reject_admits_up_to_the_limit_and_refuses_the_next_with_full() {
    let controller = controller(2, BulkheadPolicy::HardReject);
    let first = controller.try_acquire().expect("a free slot");
    let _second = controller.try_acquire().expect("a free slot");

    let full = controller.try_acquire().expect_err("both slots are taken");

    assert_eq!(full.reason(), FullReason::Full);
    assert_eq!(full.name(), NAME);
    assert_eq!(full.to_string(), "bulkhead full: ledger");
    assert!(!first.is_over_capacity());
    drop(first);
    let _third = controller
        .try_acquire()
        .expect("the dropped permit freed its slot");
    let stats = controller.stats();
    assert_eq!(
        (stats.in_flight, stats.rejected, stats.over_capacity),
        (2, 1, 0)
    );
}

#[test]
fn acquire_answers_at_once_under_the_policies_without_a_queue() {
    let hard = controller(1, BulkheadPolicy::HardReject);
    let _held = hard.try_acquire().unwrap();
    match poll_once(&mut pin!(hard.acquire())) {
        Poll::Ready(Err(full)) => assert_eq!(full.reason(), FullReason::Full),
        other => panic!("hard reject refuses at once, got {other:?}"),
    }

    for policy in [
        BulkheadPolicy::SoftAllow,
        BulkheadPolicy::SoftAllowWithSignal,
    ] {
        let soft = controller(1, policy);
        let _held = soft.try_acquire().unwrap();
        match poll_once(&mut pin!(soft.acquire())) {
            Poll::Ready(Ok(permit)) => assert!(permit.is_over_capacity(), "{policy:?}"),
            other => panic!("{policy:?} admits at once, got {other:?}"),
        }
    }
}

#[test]
fn soft_allow_never_refuses_and_counts_each_admission_beyond_the_limit() {
    let controller = controller(2, BulkheadPolicy::SoftAllow);
    let pressure = controller.pressure();

    let permits: Vec<Permit> = (0..5)
        .map(|_| controller.try_acquire().expect("soft allow never refuses"))
        .collect();

    let over: Vec<bool> = permits.iter().map(Permit::is_over_capacity).collect();
    assert_eq!(over, [false, false, true, true, true]);
    let stats = controller.stats();
    assert_eq!(
        (stats.in_flight, stats.over_capacity, stats.rejected),
        (5, 3, 0)
    );
    assert!(!stats.under_pressure, "soft allow does not signal");
    assert!(!pressure.has_changed().unwrap());
    drop(permits);
    let stats = controller.stats();
    assert_eq!(
        (stats.in_flight, stats.over_capacity),
        (0, 3),
        "over_capacity counts since the start"
    );
}

#[test]
fn soft_allow_with_signal_reports_pressure_in_stats_and_on_the_watch() {
    let controller = controller(1, BulkheadPolicy::SoftAllowWithSignal);
    let mut pressure = controller.pressure();
    let within = controller.try_acquire().unwrap();
    assert!(!controller.stats().under_pressure);

    let over = controller.try_acquire().unwrap();

    assert!(over.is_over_capacity());
    assert!(controller.stats().under_pressure);
    assert!(pressure.has_changed().unwrap());
    assert!(*pressure.borrow_and_update());
    assert!(
        *controller.pressure().borrow(),
        "a receiver subscribed while over reads true"
    );

    drop(within);

    assert!(!controller.stats().under_pressure, "one in flight: within");
    assert!(pressure.has_changed().unwrap());
    assert!(!*pressure.borrow_and_update());
    assert_eq!(controller.stats().over_capacity, 1);
    drop(over);
}

#[test]
fn pressure_stays_false_under_the_policies_that_do_not_signal() {
    for policy in [
        BulkheadPolicy::HardReject,
        queue(1, 100),
        BulkheadPolicy::SoftAllow,
    ] {
        let controller = controller(1, policy);
        let pressure = controller.pressure();

        let permits: Vec<_> = (0..3)
            .filter_map(|_| controller.try_acquire().ok())
            .collect();

        assert!(!permits.is_empty());
        assert!(!pressure.has_changed().unwrap(), "{policy:?}");
        assert!(!*pressure.borrow(), "{policy:?}");
        assert!(!controller.stats().under_pressure, "{policy:?}");
    }
}

// === Queue ===

#[test]
fn queue_try_acquire_refuses_at_once_with_full_and_does_not_queue() {
    let controller = controller(1, queue(5, 100));
    let _held = controller.try_acquire().expect("a free slot");

    let full = controller.try_acquire().expect_err("the slot is taken");

    assert_eq!(full.reason(), FullReason::Full);
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn queue_acquire_waits_for_a_released_slot() {
    let controller = controller(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());
    assert_eq!(controller.stats().queued, 1);
    advance(ms(40)).await;
    assert!(poll_once(&mut waiter).is_pending());

    drop(held);

    let Poll::Ready(Ok(permit)) = poll_once(&mut waiter) else {
        panic!("the released slot went to the waiter");
    };
    assert!(!permit.is_over_capacity());
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_queue_with_no_deadline_waits_as_long_as_it_takes() {
    let controller = controller(
        1,
        BulkheadPolicy::Queue {
            capacity: 1,
            max_wait: switchyard_bulkhead::NO_DEADLINE,
        },
    );
    let held = controller.try_acquire().unwrap();
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());
    // A year passes: no deadline expires.
    advance(Duration::from_secs(365 * 24 * 3600)).await;
    assert!(poll_once(&mut waiter).is_pending());
    drop(held);
    let Poll::Ready(Ok(_permit)) = poll_once(&mut waiter) else {
        panic!("the released slot went to the waiter");
    };
    assert_eq!(controller.stats().rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn queue_try_acquire_cannot_overtake_a_waiter() {
    let controller = controller(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());

    drop(held);

    assert_eq!(
        controller
            .try_acquire()
            .expect_err("handed to the waiter")
            .reason(),
        FullReason::Full
    );
    assert!(matches!(poll_once(&mut waiter), Poll::Ready(Ok(_))));
}

#[tokio::test(start_paused = true)]
async fn queue_acquire_beyond_capacity_is_refused_at_once_with_queue_full() {
    let controller = controller(1, queue(2, 100));
    let _held = controller.try_acquire().unwrap();
    let mut first = Box::pin(controller.acquire());
    let mut second = Box::pin(controller.acquire());
    assert!(poll_once(&mut first).is_pending());
    assert!(poll_once(&mut second).is_pending());

    let refused = poll_once(&mut pin!(controller.acquire()));

    match refused {
        Poll::Ready(Err(full)) => {
            assert_eq!(full.reason(), FullReason::QueueFull);
            assert_eq!(full.to_string(), "bulkhead full: ledger");
        }
        other => panic!("the third waiter is refused at once, got {other:?}"),
    }
    let stats = controller.stats();
    assert_eq!((stats.queued, stats.rejected), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn queue_acquire_is_refused_with_wait_expired_after_exactly_max_wait() {
    let controller = controller(1, queue(1, 100));
    let _held = controller.try_acquire().unwrap();
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());
    advance(ms(99)).await;
    assert!(poll_once(&mut waiter).is_pending());

    advance(ms(1)).await;

    match poll_once(&mut waiter) {
        Poll::Ready(Err(full)) => assert_eq!(full.reason(), FullReason::WaitExpired),
        other => panic!("the wait expired, got {other:?}"),
    }
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn acquire_hands_out_slots_in_fifo_order() {
    const WAITERS: u32 = 5;
    let controller = controller(1, queue(WAITERS, 60_000));
    let held = controller.try_acquire().unwrap();
    let (admitted, mut order) = mpsc::unbounded_channel();
    for i in 0..WAITERS {
        let waiter = controller.clone();
        let admitted = admitted.clone();
        tokio::spawn(async move {
            let permit = waiter.acquire().await;
            admitted.send((i, permit)).expect("the test is listening");
        });
        // Let the task queue before the next one is spawned.
        while controller.stats().queued <= i {
            tokio::task::yield_now().await;
        }
    }
    let started = Instant::now();

    drop(held);

    for expected in 0..WAITERS {
        let (i, permit) = order.recv().await.expect("a waiter was admitted");
        assert_eq!(i, expected, "waiters are admitted in the order they queued");
        let permit = permit.expect("admitted, not refused");
        let stats = controller.stats();
        assert_eq!((stats.in_flight, stats.queued), (1, WAITERS - 1 - expected));
        drop(permit);
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "nobody waited on a timer"
    );
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_acquire_future_leaves_the_queue_and_takes_no_slot() {
    let controller = controller(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());
    assert_eq!(controller.stats().queued, 1);

    drop(waiter);

    assert_eq!(controller.stats().queued, 0);
    let mut next = Box::pin(controller.acquire());
    assert!(
        poll_once(&mut next).is_pending(),
        "the seat is free: queued, not refused"
    );
    drop(next);
    drop(held);
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (0, 0, 0));
    let _permit = controller.try_acquire().expect("the slot went to nobody");
}

#[tokio::test(start_paused = true)]
async fn an_acquire_future_dropped_after_its_slot_was_handed_over_gives_the_slot_back() {
    let controller = controller(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());
    drop(held);
    assert!(
        controller.try_acquire().is_err(),
        "the slot is the waiter's"
    );

    drop(waiter);

    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
    let _permit = controller.try_acquire().expect("the slot came back");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_cancelled_mid_queue_leaves_the_others_in_order() {
    let controller = controller(1, queue(3, 100));
    let held = controller.try_acquire().unwrap();
    let mut first = Box::pin(controller.acquire());
    let mut middle = Box::pin(controller.acquire());
    let mut last = Box::pin(controller.acquire());
    for waiter in [&mut first, &mut middle, &mut last] {
        assert!(poll_once(waiter).is_pending());
    }

    drop(middle);
    drop(held);

    assert!(poll_once(&mut last).is_pending(), "first is ahead");
    let Poll::Ready(Ok(permit)) = poll_once(&mut first) else {
        panic!("the head of the queue is admitted");
    };
    drop(permit);
    assert!(
        matches!(poll_once(&mut last), Poll::Ready(Ok(_))),
        "the cancelled waiter's turn was skipped"
    );
}

// === Stats ===

#[tokio::test(start_paused = true)]
async fn stats_report_each_counter_and_serialise_to_json() {
    let controller = controller(2, queue(2, 100));
    let _held = [controller.try_acquire(), controller.try_acquire()];
    let mut waiter = Box::pin(controller.acquire());
    assert!(poll_once(&mut waiter).is_pending());
    assert!(controller.try_acquire().is_err());

    let stats = controller.stats();

    assert_eq!(stats.name, NAME);
    assert_eq!(stats.max_concurrent_calls, 2);
    assert_eq!(
        serde_json::to_value(&stats).unwrap(),
        json!({
            "name": "ledger",
            "max_concurrent_calls": 2,
            "in_flight": 2,
            "queued": 1,
            "rejected": 1,
            "over_capacity": 0,
            "under_pressure": false
        })
    );
}

#[test]
fn stats_of_a_signalling_bulkhead_over_its_limit_serialise_its_pressure() {
    let controller = controller(1, BulkheadPolicy::SoftAllowWithSignal);
    let _permits = [controller.try_acquire(), controller.try_acquire()];

    assert_eq!(
        serde_json::to_value(controller.stats()).unwrap(),
        json!({
            "name": "ledger",
            "max_concurrent_calls": 1,
            "in_flight": 2,
            "queued": 0,
            "rejected": 0,
            "over_capacity": 1,
            "under_pressure": true
        })
    );
}

#[test]
fn clones_of_a_controller_share_its_slots_name_and_policy() {
    let controller = controller(1, queue(3, 250));
    let clone = controller.clone();

    let _held = controller.try_acquire().unwrap();

    assert!(clone.try_acquire().is_err());
    assert_eq!(clone.name(), NAME);
    assert_eq!(clone.policy(), queue(3, 250));
    assert_eq!(clone.stats(), controller.stats());
}

// === Pressure under concurrent releases ===

#[test]
fn pressure_is_not_left_raised_when_a_permit_is_released_during_an_over_capacity_admission() {
    // Another thread's release, staged on this one: the metrics hook that runs between the
    // two steps of the admission (the over-capacity counter, admission.rs:211) drops a permit.
    let released: Arc<Mutex<Option<Permit>>> = Arc::default();
    let hook = {
        let released = Arc::clone(&released);
        move || drop(released.lock().unwrap().take())
    };
    let recorder = CounterHook::new("switchyard_bulkhead_over_capacity_total", hook);
    let controller = metrics::with_local_recorder(&recorder, || {
        controller(1, BulkheadPolicy::SoftAllowWithSignal)
    });
    let mut pressure = controller.pressure();
    *released.lock().unwrap() = Some(controller.try_acquire().unwrap());

    let over = controller.try_acquire().unwrap();

    assert!(over.is_over_capacity(), "admitted while the slot was taken");
    assert!(released.lock().unwrap().is_none(), "released meanwhile");
    let stats = controller.stats();
    assert_eq!(stats.in_flight, 1, "back within the limit");
    assert!(
        !stats.under_pressure,
        "within the limit, yet under pressure"
    );
    assert!(
        !*pressure.borrow_and_update(),
        "the watch signals pressure within the limit"
    );
}

// === Permit accounting under random runs ===

#[derive(Debug, Clone, Copy)]
enum Op {
    /// `acquire`, polled once: admitted at once, queued, or refused with the queue full.
    Acquire,
    /// `try_acquire`: admitted at once or refused with `Full`.
    TryAcquire,
    /// Drops the held permit at this index (modulo how many are held).
    Release(usize),
    /// Drops the queued `acquire` at this index (modulo how many wait).
    Cancel(usize),
    /// Lets this many milliseconds of tokio time pass.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        1 => Just(Op::TryAcquire),
        3 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u64..150).prop_map(Op::Advance),
    ]
}

fn count(n: usize) -> u32 {
    u32::try_from(n).expect("a test holds few permits")
}

async fn run(
    limit: u32,
    capacity: u32,
    max_wait: Duration,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let controller = controller(limit, BulkheadPolicy::Queue { capacity, max_wait });
    let mut held: Vec<Permit> = Vec::new();
    // Queued `acquire`s, oldest first, with when each started.
    let mut waiting = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        let full = count(held.len()) == limit;
        match op {
            Op::Acquire => {
                let mut acquire = Box::pin(controller.acquire());
                match poll_once(&mut acquire) {
                    Poll::Ready(Ok(permit)) => {
                        prop_assert!(!full, "step {}: admitted beyond the limit", step);
                        held.push(permit);
                    }
                    Poll::Ready(Err(refused)) => {
                        prop_assert_eq!(refused.reason(), FullReason::QueueFull, "step {}", step);
                        prop_assert!(full, "step {}: refused with a free slot", step);
                        prop_assert_eq!(count(waiting.len()), capacity, "step {}", step);
                    }
                    Poll::Pending => {
                        prop_assert!(full, "step {}: queued with a free slot", step);
                        prop_assert!(count(waiting.len()) < capacity, "step {}", step);
                        waiting.push((Instant::now(), acquire));
                    }
                }
            }
            Op::TryAcquire => match controller.try_acquire() {
                Ok(permit) => {
                    prop_assert!(!full, "step {}: admitted beyond the limit", step);
                    held.push(permit);
                }
                Err(refused) => {
                    prop_assert_eq!(refused.reason(), FullReason::Full, "step {}", step);
                    prop_assert!(full, "step {}: refused with a free slot", step);
                }
            },
            Op::Release(i) if !held.is_empty() => drop(held.remove(i % held.len())),
            Op::Cancel(i) if !waiting.is_empty() => drop(waiting.remove(i % waiting.len())),
            Op::Release(_) | Op::Cancel(_) => {}
            Op::Advance(millis) => advance(ms(millis)).await,
        }

        // Settle the queue: every waiter learns whether it got a slot or ran out of time.
        let now = Instant::now();
        let mut still_waiting = Vec::new();
        for (started, mut acquire) in waiting.drain(..) {
            match poll_once(&mut acquire) {
                Poll::Ready(Ok(permit)) => {
                    prop_assert!(
                        still_waiting.is_empty(),
                        "step {}: admitted ahead of an older waiter",
                        step
                    );
                    held.push(permit);
                }
                Poll::Ready(Err(refused)) => {
                    prop_assert_eq!(refused.reason(), FullReason::WaitExpired, "step {}", step);
                    prop_assert!(now - started >= max_wait, "step {}: expired early", step);
                    prop_assert!(
                        still_waiting.is_empty(),
                        "step {}: expired ahead of an older waiter",
                        step
                    );
                }
                Poll::Pending => {
                    prop_assert!(now - started < max_wait, "step {}: waits too long", step);
                    still_waiting.push((started, acquire));
                }
            }
        }
        waiting = still_waiting;

        let stats = controller.stats();
        prop_assert!(stats.in_flight <= limit, "step {}: {:?}", step, stats);
        prop_assert!(stats.queued <= capacity, "step {}: {:?}", step, stats);
        prop_assert_eq!(stats.in_flight, count(held.len()), "step {}", step);
        prop_assert_eq!(stats.queued, count(waiting.len()), "step {}", step);
        prop_assert!(
            waiting.is_empty() || count(held.len()) == limit,
            "step {}: a slot is free while {} wait",
            step,
            waiting.len()
        );
    }

    drop(waiting);
    drop(held);
    let stats = controller.stats();
    prop_assert_eq!((stats.in_flight, stats.queued), (0, 0), "a permit leaked");
    let all: Vec<_> = (0..limit).map(|_| controller.try_acquire()).collect();
    prop_assert!(all.iter().all(Result::is_ok), "every slot is free again");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn queue_permits_never_exceed_the_limit_or_leak_under_random_cancels(
        limit in 1u32..4,
        capacity in 1u32..5,
        max_wait in (1u64..200).prop_map(ms),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        paused_runtime().block_on(run(limit, capacity, max_wait, ops))?;
    }
}

proptest! {
    // Long runs: three sequences of 10,000 operations, about a sixth of them cancels of a
    // queued acquire, with the same invariants checked after every step.
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    #[test]
    fn ten_thousand_step_runs_leak_no_permit(
        limit in 1u32..4,
        capacity in 1u32..5,
        max_wait in (1u64..200).prop_map(ms),
        ops in proptest::collection::vec(op(), 10_000),
    ) {
        paused_runtime().block_on(run(limit, capacity, max_wait, ops))?;
    }
}
