//! Contract tests of the bulkhead service through the public API: refusing when full without
//! touching the inner service, giving slots back, who holds a slot, the fair queue, the
//! soft-allow policies and the inner service's readiness.

mod support;

use std::task::{Context, Poll, Waker};

use switchyard_bulkhead::{
    AdmissionController, Bulkhead, BulkheadConfig, BulkheadFull, BulkheadLayer, BulkheadPolicy,
    FullReason, OverCapacity, Permit, ResponseFuture,
};
use switchyard_core::{BoxError, RejectionKind, find_rejection};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use support::{
    BACKEND_NOT_READY, Backend, NAME, bulkhead, bulkhead_full, call, is_send_sync_static, ms,
    poll_once, queue, refusal,
};

/// A layer named [`NAME`] with `max_concurrent_calls` slots under `policy`.
fn layer(max_concurrent_calls: u32, policy: BulkheadPolicy) -> BulkheadLayer {
    BulkheadLayer::new(NAME, &BulkheadConfig::new(max_concurrent_calls, policy))
        .expect("a valid config")
}

// === Hard reject ===

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_is_ready_without_polling_the_inner_service_and_refuses_the_call() {
    let (mut svc, backend, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    let _held = controller.try_acquire().expect("the one slot is free");

    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let err = svc.call(1).await.expect_err("refused");

    assert_eq!(err.to_string(), "bulkhead full: ledger");
    let full = bulkhead_full(&err);
    assert_eq!(full.name(), NAME);
    assert_eq!(full.reason(), FullReason::Full);
    let rejection = find_rejection(&*err).expect("BulkheadFull is a registered rejection");
    assert_eq!(rejection.kind(), RejectionKind::BulkheadFull);
    assert_eq!(
        rejection.kind().http_status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(rejection.subject(), Some(NAME));
    assert_eq!(
        backend.polls(),
        0,
        "poll_ready did not reach the inner service"
    );
    assert_eq!(
        backend.calls(),
        0,
        "the refused call did not reach it either"
    );
    assert_eq!(controller.stats().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_call_holds_the_slot_and_the_next_is_refused_though_the_inner_is_not_ready() {
    let layer = layer(1, BulkheadPolicy::HardReject);
    let controller = layer.controller().clone();
    let (mut svc, mut inner) = mock::spawn_layer::<u32, u32, _>(layer);
    inner.allow(1);
    assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let in_flight = svc.call(1);
    let (_, respond) = inner
        .next_request()
        .await
        .expect("the call reached the mock");
    assert_eq!(controller.stats().in_flight, 1);

    // The mock has no capacity left: polled, it would answer Pending.
    assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let err = svc.call(2).await.expect_err("refused");

    assert_eq!(bulkhead_full(&err).reason(), FullReason::Full);
    assert!(
        inner.poll_request().is_pending(),
        "no request reached the mock"
    );
    respond.send_response(10);
    assert_eq!(in_flight.await.unwrap(), 10);
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_released_as_soon_as_the_response_future_resolves() {
    let layer = layer(1, BulkheadPolicy::HardReject);
    let controller = layer.controller().clone();
    let (mut svc, mut inner) = mock::spawn_layer::<u32, u32, _>(layer);
    inner.allow(2);
    assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let mut response = Box::pin(svc.call(1));
    let (_, respond) = inner.next_request().await.expect("the call arrived");
    assert!(poll_once(&mut response).is_pending());
    assert_eq!(controller.stats().in_flight, 1);

    respond.send_response(11);

    assert!(matches!(poll_once(&mut response), Poll::Ready(Ok(11))));
    assert_eq!(
        controller.stats().in_flight,
        0,
        "released on resolving, before the future is dropped"
    );
    assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let next = svc.call(2);
    let (request, respond) = inner.next_request().await.expect("admitted");
    assert_eq!(request, 2);
    respond.send_response(12);
    assert_eq!(next.await.unwrap(), 12);
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_released_when_the_response_future_is_dropped_before_completion() {
    let (mut svc, backend, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    backend.hang(true);
    svc.ready().await.unwrap();
    let mut hanging = Box::pin(svc.call(1));
    assert!(poll_once(&mut hanging).is_pending());
    assert_eq!(refusal(&call(&mut svc, 2).await), FullReason::Full);
    backend.hang(false);

    drop(hanging);

    assert_eq!(controller.stats().in_flight, 0);
    assert_eq!(call(&mut svc, 3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_response_future_dropped_before_its_first_poll_releases_the_slot() {
    let (mut svc, _, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    svc.ready().await.unwrap();
    let never_polled = svc.call(1);
    assert_eq!(controller.stats().in_flight, 1);

    drop(never_polled);

    assert_eq!(controller.stats().in_flight, 0);
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
}

// === Who holds a slot ===

#[tokio::test(start_paused = true)]
async fn the_readied_instance_holds_its_slot_until_its_call() {
    let (mut a, backend, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    let mut b = a.clone();

    a.ready().await.unwrap();
    assert_eq!(controller.stats().in_flight, 1, "taken in poll_ready");
    assert_eq!(refusal(&call(&mut b, 2).await), FullReason::Full);

    assert_eq!(a.call(1).await.unwrap(), 1);

    assert_eq!(controller.stats().in_flight, 0);
    assert_eq!(call(&mut b, 3).await.unwrap(), 3, "b gets the slot now");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_slots() {
    let (svc, backend, controller) = bulkhead(2, BulkheadPolicy::HardReject);
    backend.hang(true);
    let mut clones: Vec<_> = (0..3).map(|_| svc.clone()).collect();
    let mut in_flight = Vec::new();
    for clone in &mut clones[..2] {
        clone.ready().await.unwrap();
        in_flight.push(clone.call(1));
    }

    let third = call(&mut clones[2], 3).await;

    assert_eq!(refusal(&third), FullReason::Full);
    assert_eq!(controller.stats().in_flight, 2);
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_clone_of_a_readied_service_starts_without_a_slot() {
    let (mut a, _, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    a.ready().await.unwrap();

    let mut b = a.clone();

    assert_eq!(controller.stats().in_flight, 1, "the clone took no slot");
    assert_eq!(refusal(&call(&mut b, 2).await), FullReason::Full);
    assert_eq!(a.call(1).await.unwrap(), 1, "a still holds its own");
}

#[tokio::test]
#[should_panic(expected = "poll_ready must be called first")]
async fn calling_a_clone_that_was_not_readied_panics() {
    let (mut a, _, _) = bulkhead(2, BulkheadPolicy::HardReject);
    a.ready().await.unwrap();
    let mut b = a.clone();
    drop(b.call(1));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_readied_service_gives_its_slot_back() {
    let (svc, _, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    let mut a = svc.clone();
    a.ready().await.unwrap();
    assert_eq!(controller.stats().in_flight, 1);

    drop(a);

    assert_eq!(controller.stats().in_flight, 0);
    let _permit = controller.try_acquire().expect("the slot is free again");
}

#[tokio::test(start_paused = true)]
async fn services_of_a_layer_built_from_a_controller_share_its_slots() {
    let controller =
        AdmissionController::new(NAME, &BulkheadConfig::new(1, BulkheadPolicy::HardReject))
            .expect("a valid config");
    let layer = BulkheadLayer::from_controller(controller.clone());
    let mut first = layer.layer(Backend::new());
    let mut second = layer.layer(Backend::new());

    first.ready().await.unwrap();

    assert_eq!(refusal(&call(&mut second, 2).await), FullReason::Full);
    assert!(controller.try_acquire().is_err(), "the controller is full");
    assert_eq!(first.call(1).await.unwrap(), 1);
    assert_eq!(first.controller().stats().in_flight, 0);
}

// === Queue ===

#[tokio::test(start_paused = true)]
async fn a_queued_service_stays_pending_while_full_and_readies_when_a_slot_frees() {
    let (svc, backend, controller) = bulkhead(1, queue(2, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiting = mock::Spawn::new(svc);

    assert!(waiting.poll_ready::<u32>().is_pending());
    assert_eq!(controller.stats().queued, 1);
    advance(ms(50)).await;
    assert!(!waiting.is_woken());
    assert!(waiting.poll_ready::<u32>().is_pending());
    assert_eq!(
        backend.polls(),
        0,
        "the inner service is polled once a slot is held"
    );

    drop(held);

    assert!(waiting.is_woken(), "the freed slot woke the waiter");
    assert!(matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (1, 0, 0));
    assert_eq!(waiting.call(7).await.unwrap(), 7);
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn queued_clones_are_readied_in_the_order_they_queued() {
    let (svc, backend, controller) = bulkhead(1, queue(4, 1_000));
    let held = controller.try_acquire().unwrap();
    let mut waiting: Vec<_> = (0..3).map(|_| mock::Spawn::new(svc.clone())).collect();
    for waiter in &mut waiting {
        assert!(waiter.poll_ready::<u32>().is_pending());
    }

    drop(held);

    // The slot went to the head of the queue: neither a newcomer nor `try_acquire` gets it.
    assert!(controller.try_acquire().is_err(), "try_acquire overtook");
    let mut newcomer = mock::Spawn::new(svc.clone());
    assert!(
        newcomer.poll_ready::<u32>().is_pending(),
        "the newcomer queues"
    );
    waiting.push(newcomer);
    for i in 0..waiting.len() {
        let (head, rest) = waiting[i..].split_first_mut().expect("a waiter");
        assert!(
            matches!(head.poll_ready::<u32>(), Poll::Ready(Ok(()))),
            "waiter {i} is next"
        );
        for later in rest {
            assert!(
                later.poll_ready::<u32>().is_pending(),
                "only waiter {i} has a slot"
            );
        }
        let req = u32::try_from(i).unwrap();
        assert_eq!(head.call(req).await.unwrap(), req);
    }
    assert_eq!(backend.calls(), 4);
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_waiter_beyond_the_queue_capacity_is_refused_with_queue_full() {
    let (svc, backend, controller) = bulkhead(1, queue(2, 100));
    let _held = controller.try_acquire().unwrap();
    let mut waiting: Vec<_> = (0..2).map(|_| mock::Spawn::new(svc.clone())).collect();
    for waiter in &mut waiting {
        assert!(waiter.poll_ready::<u32>().is_pending());
    }
    let mut third = mock::Spawn::new(svc.clone());

    assert!(
        matches!(third.poll_ready::<u32>(), Poll::Ready(Ok(()))),
        "refused at once, through call"
    );
    let err = third.call(3).await.expect_err("the queue is full");

    assert_eq!(err.to_string(), "bulkhead full: ledger");
    assert_eq!(bulkhead_full(&err).reason(), FullReason::QueueFull);
    let rejection = find_rejection(&*err).expect("a registered rejection");
    assert_eq!(rejection.kind(), RejectionKind::BulkheadFull);
    let stats = controller.stats();
    assert_eq!((stats.queued, stats.rejected), (2, 1));
    assert_eq!(backend.calls(), 0);
    for waiter in &mut waiting {
        assert!(waiter.poll_ready::<u32>().is_pending(), "still queued");
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_refused_with_wait_expired_after_max_wait() {
    let (svc, backend, controller) = bulkhead(1, queue(2, 100));
    let _held = controller.try_acquire().unwrap();
    let mut waiting = mock::Spawn::new(svc);
    assert!(waiting.poll_ready::<u32>().is_pending());
    advance(ms(99)).await;
    assert!(!waiting.is_woken());
    assert!(waiting.poll_ready::<u32>().is_pending());

    advance(ms(1)).await;

    assert!(waiting.is_woken(), "the deadline woke the waiter");
    assert!(matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let err = waiting.call(1).await.expect_err("waited too long");
    assert_eq!(bulkhead_full(&err).reason(), FullReason::WaitExpired);
    let stats = controller.stats();
    assert_eq!(
        (stats.in_flight, stats.queued, stats.rejected),
        (1, 0, 1),
        "the held slot is untouched"
    );
    assert_eq!(backend.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiting_service_leaves_the_queue_and_takes_no_slot() {
    let (svc, _, controller) = bulkhead(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiting = mock::Spawn::new(svc.clone());
    assert!(waiting.poll_ready::<u32>().is_pending());
    assert_eq!(controller.stats().queued, 1);

    drop(waiting);

    assert_eq!(controller.stats().queued, 0);
    let mut next = mock::Spawn::new(svc);
    assert!(
        next.poll_ready::<u32>().is_pending(),
        "the seat is free: queued, not refused"
    );
    drop(next);
    drop(held);
    let stats = controller.stats();
    assert_eq!(
        (stats.in_flight, stats.queued, stats.rejected),
        (0, 0, 0),
        "the slot went to nobody"
    );
    let _permit = controller.try_acquire().expect("the freed slot is free");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_service_dropped_after_its_slot_was_handed_over_gives_the_slot_back() {
    let (svc, _, controller) = bulkhead(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiting = mock::Spawn::new(svc);
    assert!(waiting.poll_ready::<u32>().is_pending());
    drop(held);
    assert!(waiting.is_woken(), "the slot is the waiter's now");
    assert!(controller.try_acquire().is_err());

    drop(waiting);

    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
    let _permit = controller.try_acquire().expect("the slot came back");
}

// === Soft allow ===

#[tokio::test(start_paused = true)]
async fn soft_allow_admits_calls_beyond_the_limit_and_counts_them() {
    let (mut svc, backend, controller) = bulkhead(1, BulkheadPolicy::SoftAllow);
    let mut pressure = controller.pressure();
    backend.hang(true);

    let mut in_flight = Vec::new();
    for i in 0..3 {
        svc.ready().await.unwrap();
        in_flight.push(svc.call(i));
    }

    assert_eq!(backend.calls(), 3, "every call reached the backend");
    let stats = controller.stats();
    assert_eq!(
        (stats.in_flight, stats.over_capacity, stats.rejected),
        (3, 2, 0)
    );
    assert!(!stats.under_pressure, "soft allow does not signal");
    assert!(!pressure.has_changed().unwrap());
    assert!(!*pressure.borrow_and_update());
    drop(in_flight);
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn soft_allow_with_signal_raises_pressure_over_the_limit_and_lowers_it_when_back_within() {
    let (mut svc, backend, controller) = bulkhead(2, BulkheadPolicy::SoftAllowWithSignal);
    let mut pressure = controller.pressure();
    let first = controller.try_acquire().unwrap();
    let second = controller.try_acquire().unwrap();
    assert!(!first.is_over_capacity() && !second.is_over_capacity());
    assert!(
        !pressure.has_changed().unwrap(),
        "at the limit, not over it"
    );

    backend.hang(true);
    svc.ready().await.unwrap();
    let over_call = svc.call(1);

    assert_eq!(backend.calls(), 1, "admitted beyond the limit");
    assert!(pressure.has_changed().unwrap());
    assert!(*pressure.borrow_and_update());
    let over = controller.try_acquire().unwrap();
    assert!(over.is_over_capacity());
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.over_capacity), (4, 2));
    assert!(stats.under_pressure);

    drop(over);
    assert!(
        !pressure.has_changed().unwrap(),
        "3 in flight: still over the limit"
    );
    drop(over_call);

    assert!(pressure.has_changed().unwrap(), "back within the limit");
    assert!(!*pressure.borrow_and_update());
    assert!(!controller.stats().under_pressure);
    assert_eq!(controller.stats().in_flight, 2);
    drop((first, second));
    assert!(
        !pressure.has_changed().unwrap(),
        "no signal below the limit"
    );
}

#[tokio::test(start_paused = true)]
async fn signalled_responses_carry_over_capacity_only_when_admitted_beyond_the_limit() {
    let layer = layer(1, BulkheadPolicy::SoftAllowWithSignal).signal_responses();
    let controller = layer.controller().clone();
    let mut svc = layer.layer(service_fn(|body: &'static str| async move {
        Ok::<_, BoxError>(http::Response::new(body))
    }));

    let within = svc.ready().await.unwrap().call("within").await.unwrap();
    assert!(within.extensions().get::<OverCapacity>().is_none());

    let held = controller.try_acquire().unwrap();
    let over = svc.ready().await.unwrap().call("over").await.unwrap();
    let mark = over.extensions().get::<OverCapacity>().expect("marked");
    assert_eq!(mark.bulkhead(), NAME);
    assert_eq!(*over.body(), "over");
    drop(held);

    let again = svc.ready().await.unwrap().call("again").await.unwrap();
    assert!(again.extensions().get::<OverCapacity>().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_plain_soft_allow_bulkhead_marks_over_capacity_responses_too() {
    let layer = layer(1, BulkheadPolicy::SoftAllow).signal_responses();
    let _held = layer.controller().try_acquire().unwrap();
    let mut svc = layer.layer(service_fn(|()| async {
        Ok::<_, BoxError>(http::Response::new(()))
    }));
    let over = svc.ready().await.unwrap().call(()).await.unwrap();
    assert!(over.extensions().get::<OverCapacity>().is_some());
}

// === Inner readiness ===

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_propagates_and_gives_the_slot_back() {
    let policies = [
        BulkheadPolicy::HardReject,
        queue(1, 100),
        BulkheadPolicy::SoftAllow,
        BulkheadPolicy::SoftAllowWithSignal,
    ];
    for policy in policies {
        let (mut svc, backend, controller) = bulkhead(1, policy);
        backend.fail_poll_ready(true);

        let err = svc
            .ready()
            .await
            .expect_err("the inner service is not ready");

        assert_eq!(err.to_string(), BACKEND_NOT_READY, "{policy:?}");
        assert!(err.downcast_ref::<BulkheadFull>().is_none(), "{policy:?}");
        let stats = controller.stats();
        assert_eq!(
            (stats.in_flight, stats.rejected),
            (0, 0),
            "{policy:?}: the slot came back"
        );
        backend.fail_poll_ready(false);
        assert_eq!(call(&mut svc, 2).await.unwrap(), 2, "{policy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_after_a_queued_wait_gives_the_slot_back() {
    let (svc, backend, controller) = bulkhead(1, queue(1, 100));
    let held = controller.try_acquire().unwrap();
    let mut waiting = mock::Spawn::new(svc);
    assert!(waiting.poll_ready::<u32>().is_pending());
    backend.fail_poll_ready(true);

    drop(held);

    match waiting.poll_ready::<u32>() {
        Poll::Ready(Err(err)) => assert_eq!(err.to_string(), BACKEND_NOT_READY),
        other => panic!("expected the inner error, got {other:?}"),
    }
    let stats = controller.stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
    let _permit = controller.try_acquire().expect("the slot came back");
}

#[tokio::test(start_paused = true)]
async fn a_service_waiting_on_its_inner_readiness_holds_its_slot() {
    // As tower's `ConcurrencyLimit` does: the slot is taken first, then the inner service is
    // polled, and the slot is kept while the inner service is not ready.
    let layer = layer(1, BulkheadPolicy::HardReject);
    let controller = layer.controller().clone();
    let (mut svc, mut inner) = mock::spawn_layer::<u32, u32, _>(layer);
    inner.allow(0);

    assert!(svc.poll_ready::<u32>().is_pending());
    assert_eq!(controller.stats().in_flight, 1);
    inner.allow(1);

    assert!(svc.is_woken());
    assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let response = svc.call(5);
    let (_, respond) = inner.next_request().await.expect("the call arrived");
    respond.send_response(5);
    assert_eq!(response.await.unwrap(), 5);
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_reconsidered_when_poll_ready_is_called_again_after_a_slot_frees() {
    let (mut svc, backend, controller) = bulkhead(1, BulkheadPolicy::HardReject);
    let held = controller.try_acquire().unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    drop(held);

    // A balancer's ready cache polls a cached service again right before calling it.
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let result = svc.call(1).await;

    assert_eq!(result.expect("the slot was free at the last poll_ready"), 1);
    assert_eq!(backend.calls(), 1);
}

// === Send + Sync ===

/// Compiles only if the bulkhead, its future, its layer, controller and permits are
/// `Send + Sync + 'static` for every inner service that is.
fn bulkhead_is_send_sync_static_when_its_inner_is<S>(_: &S)
where
    S: Service<u32> + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + Sync + 'static,
{
    is_send_sync_static::<Bulkhead<S>>();
    is_send_sync_static::<<Bulkhead<S> as Service<u32>>::Future>();
    is_send_sync_static::<ResponseFuture<S::Future>>();
    is_send_sync_static::<BulkheadLayer>();
    is_send_sync_static::<AdmissionController>();
    is_send_sync_static::<Permit>();
    is_send_sync_static::<BulkheadFull>();
}

#[test]
fn bulkhead_response_future_controller_and_permit_are_send_sync_and_static() {
    let inner = service_fn(|req: u32| std::future::ready(Ok::<u32, BoxError>(req)));
    bulkhead_is_send_sync_static_when_its_inner_is(&inner);
}
