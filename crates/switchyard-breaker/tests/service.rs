//! Contract tests of the breaker service through the public API: refusing while open, probing
//! while half-open, who holds a permit, slow calls, windows, classifiers, growing waits, hung
//! probes and backpressure.

mod support;

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use switchyard_breaker::{
    BreakerHandle, BreakerMode, BreakerState, CircuitBreaker, CircuitBreakerConfig,
    CircuitBreakerLayer, ResponseFuture, Trip,
};
use switchyard_core::{
    BoxError, ErrorsAsFailures, HttpClassifier, Outcome, RejectionKind, classify_fn, find_rejection,
};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use support::{
    BACKEND_FAILED, BACKEND_NOT_READY, breaker, breaker_open, call, fail_times, is_refused,
    is_send_sync_static, ms, poll_once, seed_config,
};

/// The `(from, to)` pairs received so far.
fn transitions(
    events: &mut tokio::sync::broadcast::Receiver<switchyard_breaker::StateChange>,
) -> Vec<(BreakerState, BreakerState)> {
    let mut seen = Vec::new();
    while let Ok(change) = events.try_recv() {
        seen.push((change.from, change.to));
    }
    seen
}

// === Closed and open ===

#[tokio::test(start_paused = true)]
async fn seed_example_refuses_the_third_call_with_circuit_open() {
    let (mut svc, backend, _) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;

    let err = call(&mut svc, 3).await.expect_err("the breaker is open");

    assert_eq!(err.to_string(), "circuit open: payments");
    let open = breaker_open(&err);
    assert_eq!(open.name(), "payments");
    assert_eq!(open.retry_after(), Some(ms(100)));
    let rejection = find_rejection(&*err).expect("BreakerOpen is a registered rejection");
    assert_eq!(rejection.kind(), RejectionKind::CircuitOpen);
    assert_eq!(
        rejection.kind().http_status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(rejection.subject(), Some("payments"));
    assert_eq!(
        backend.calls(),
        2,
        "the refused call never reached the backend"
    );
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_a_success_resets_the_run() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "the success broke the run"
    );

    fail_times(&mut svc, &backend, 1).await;

    assert_eq!(handle.state(), BreakerState::Open);
    assert!(is_refused(&call(&mut svc, 2).await));
}

#[tokio::test(start_paused = true)]
async fn open_breaker_is_ready_without_polling_the_inner_service() {
    let (mut svc, backend, _) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    let polls = backend.polls();

    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let err = svc.call(3).await.expect_err("refused");

    breaker_open(&err);
    assert_eq!(
        backend.polls(),
        polls,
        "poll_ready did not reach the inner service"
    );
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_is_ready_while_the_inner_service_is_not() {
    let layer = CircuitBreakerLayer::new("payments", seed_config()).unwrap();
    let (mut svc, mut inner) = mock::spawn_layer::<u32, u32, _>(layer);
    for _ in 0..2 {
        inner.allow(1);
        assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
        let response = svc.call(1);
        let (_, respond) = inner
            .next_request()
            .await
            .expect("the call reached the mock");
        respond.send_error("boom");
        assert_eq!(response.await.unwrap_err().to_string(), "boom");
    }

    // The mock has no capacity left: polled, it would answer Pending.
    inner.allow(0);
    assert!(matches!(svc.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    let err = svc.call(3).await.expect_err("refused");

    breaker_open(&err);
    assert!(
        inner.poll_request().is_pending(),
        "no request reached the mock"
    );
}

// === Half-open ===

#[tokio::test(start_paused = true)]
async fn half_opens_after_the_wait_and_closes_after_enough_successful_probes() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let mut events = handle.subscribe();
    fail_times(&mut svc, &backend, 2).await;

    advance(ms(99)).await;
    let err = call(&mut svc, 1).await.expect_err("still open");
    assert_eq!(breaker_open(&err).retry_after(), Some(ms(1)));

    advance(ms(1)).await;
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    assert_eq!(
        handle.state(),
        BreakerState::HalfOpen,
        "one of the two successes needed"
    );
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);

    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(backend.calls(), 4);
    assert_eq!(
        transitions(&mut events),
        [
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_breaker_for_another_wait() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;

    fail_times(&mut svc, &backend, 1).await;

    assert_eq!(handle.state(), BreakerState::Open);
    let err = call(&mut svc, 1).await.expect_err("reopened");
    assert_eq!(breaker_open(&err).retry_after(), Some(ms(100)));
}

#[tokio::test(start_paused = true)]
async fn the_readied_instance_is_the_one_called() {
    let (mut a, backend, handle) = breaker(seed_config());
    fail_times(&mut a, &backend, 2).await;
    advance(ms(100)).await;
    let mut b = a.clone();

    // `a` takes the only probe slot in poll_ready and keeps it until its call.
    a.ready().await.unwrap();
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    let err = call(&mut b, 2).await.expect_err("no probe slot left for b");
    assert_eq!(breaker_open(&err).retry_after(), None);

    assert_eq!(a.call(1).await.unwrap(), 1);
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_permit_taken_before_the_breaker_opened_is_void_at_call_time() {
    let (mut parked, backend, handle) = breaker(seed_config());
    let mut other = parked.clone();
    // `parked` is readied while closed, then sits (as in a balancer's ready cache)...
    parked.ready().await.unwrap();
    // ...while other traffic trips the breaker.
    fail_times(&mut other, &backend, 2).await;
    assert_eq!(handle.state(), BreakerState::Open);

    let err = parked
        .call(1)
        .await
        .expect_err("the breaker opened after readiness");

    assert_eq!(breaker_open(&err).retry_after(), Some(ms(100)));
    assert_eq!(
        backend.calls(),
        2,
        "the void permit never reached the backend"
    );
    assert_eq!(handle.snapshot().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_decided_afresh_at_every_poll_ready() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    // Readied while open: refused...
    svc.ready().await.unwrap();
    advance(ms(100)).await;
    // ...but readied again after the wait, the same instance probes instead.
    svc.ready().await.unwrap();
    assert_eq!(svc.call(7).await.unwrap(), 7);
    assert_eq!(backend.calls(), 3);
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    assert_eq!(
        handle.snapshot().rejected,
        0,
        "the stale refusal was never delivered"
    );
}

#[tokio::test]
#[should_panic(expected = "poll_ready must be called first")]
async fn calling_a_clone_that_was_not_readied_panics() {
    let (mut a, _, _) = breaker(seed_config());
    a.ready().await.unwrap();
    let mut b = a.clone();
    drop(b.call(1));
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker() {
    let (mut a, backend, handle) = breaker(seed_config());
    let mut b = a.clone();

    fail_times(&mut a, &backend, 1).await;
    fail_times(&mut b, &backend, 1).await;

    assert_eq!(handle.state(), BreakerState::Open);
    assert!(is_refused(&call(&mut a, 1).await));
    assert!(is_refused(&call(&mut b, 1).await));
    assert_eq!(backend.calls(), 2);
}

/// Compiles only if the breaker, its future and its handles are `Send + Sync + 'static` for
/// every inner service that is.
fn breaker_is_send_sync_static_when_its_inner_is<S>(_: &S)
where
    S: Service<u32> + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + Sync + 'static,
{
    is_send_sync_static::<CircuitBreaker<S>>();
    is_send_sync_static::<<CircuitBreaker<S> as Service<u32>>::Future>();
    is_send_sync_static::<ResponseFuture<S::Future, ErrorsAsFailures>>();
    is_send_sync_static::<CircuitBreakerLayer>();
    is_send_sync_static::<BreakerHandle>();
}

#[test]
fn breaker_and_response_future_are_send_sync_and_static() {
    let inner = service_fn(|req: u32| std::future::ready(Ok::<u32, BoxError>(req)));
    breaker_is_send_sync_static_when_its_inner_is(&inner);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_the_permitted_probes() {
    let (mut svc, backend, handle) = breaker(seed_config().with_half_open(2, 2));
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    backend.hang(true);

    let mut clones: Vec<_> = (0..5).map(|_| svc.clone()).collect();
    for clone in &mut clones {
        clone.ready().await.unwrap();
    }
    let mut responses: Vec<_> = clones.iter_mut().map(|clone| clone.call(1)).collect();

    assert_eq!(
        backend.calls(),
        2 + 2,
        "exactly two probes reached the backend"
    );
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    for (i, response) in responses.iter_mut().enumerate() {
        match poll_once(response) {
            Poll::Pending => assert!(i < 2, "clone {i} should have been refused"),
            Poll::Ready(Err(err)) => {
                assert!(i >= 2, "clone {i} should have been admitted");
                assert_eq!(breaker_open(&err).retry_after(), None);
            }
            Poll::Ready(Ok(_)) => panic!("the backend hangs"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_future_frees_its_slot() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    backend.hang(true);
    let mut a = svc.clone();
    a.ready().await.unwrap();
    let probe = a.call(1);
    let mut b = svc.clone();
    assert!(is_refused(&call(&mut b, 2).await), "the slot is taken");

    drop(probe);
    backend.hang(false);

    assert_eq!(call(&mut b, 2).await.unwrap(), 2);
    assert_eq!(
        handle.state(),
        BreakerState::HalfOpen,
        "the cancelled probe counted for nothing"
    );
    assert_eq!(call(&mut b, 3).await.unwrap(), 3);
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_readied_service_frees_its_probe_slot() {
    let (mut svc, backend, _) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    let mut a = svc.clone();
    a.ready().await.unwrap();
    let mut b = svc.clone();
    assert!(is_refused(&call(&mut b, 2).await));

    drop(a);

    assert_eq!(call(&mut b, 2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_calls_admitted_before_the_breaker_opened_do_not_count_later() {
    let (mut svc, backend, handle) = breaker(seed_config());
    let mut early = svc.clone();
    backend.fail(true);
    backend.delay(ms(500));
    early.ready().await.unwrap();
    let late_failure = early.call(0);
    backend.delay(Duration::ZERO);
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    call(&mut svc, 1).await.unwrap();
    call(&mut svc, 2).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    fail_times(&mut svc, &backend, 1).await;

    assert_eq!(late_failure.await.unwrap_err().to_string(), BACKEND_FAILED);

    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "a failure from the previous closed spell"
    );
    assert_eq!(handle.snapshot().window.failures, 1);
}

// === Slow calls and windows ===

#[tokio::test(start_paused = true)]
async fn opens_when_half_of_the_count_window_is_slow() {
    let trip = Trip::count_window(4, 100.0)
        .with_minimum_calls(4)
        .with_slow_calls(ms(50), 50.0);
    let (mut svc, backend, handle) =
        breaker(CircuitBreakerConfig::new(trip.into()).with_wait_in_open(ms(100)));

    for delay in [0, 50, 100, 0] {
        backend.delay(ms(delay));
        call(&mut svc, 1).await.expect("every call succeeds");
    }
    let window = handle.snapshot().window;
    assert_eq!(
        (window.calls, window.failures, window.slow_calls),
        (4, 0, 1),
        "50 ms is not slow"
    );
    assert_eq!(window.slow_call_rate, Some(25.0));
    assert_eq!(handle.state(), BreakerState::Closed);

    backend.delay(ms(100));
    call(&mut svc, 1).await.expect("the call itself succeeds");

    assert_eq!(
        handle.state(),
        BreakerState::Open,
        "2 of the last 4 calls were slow"
    );
    assert!(is_refused(&call(&mut svc, 1).await));
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens_the_breaker() {
    let trip = Trip::count_window(2, 50.0)
        .with_minimum_calls(2)
        .with_slow_calls(ms(50), 100.0);
    let (mut svc, backend, handle) =
        breaker(CircuitBreakerConfig::new(trip.into()).with_wait_in_open(ms(100)));
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    backend.delay(ms(80));

    assert_eq!(
        call(&mut svc, 1).await.unwrap(),
        1,
        "the probe itself succeeds"
    );

    assert_eq!(
        handle.state(),
        BreakerState::Open,
        "but too slowly to trust"
    );
}

#[tokio::test(start_paused = true)]
async fn time_window_opens_on_recent_failures_and_forgets_old_ones() {
    let trip = Trip::time_window(Duration::from_secs(1), 50.0).with_minimum_calls(2);
    let (mut svc, backend, handle) =
        breaker(CircuitBreakerConfig::new(trip.into()).with_wait_in_open(ms(100)));

    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(handle.snapshot().window.failures, 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        handle.snapshot().window.calls,
        0,
        "the failure left the window"
    );

    fail_times(&mut svc, &backend, 1).await;
    let window = handle.snapshot().window;
    assert_eq!(
        (window.calls, window.failure_rate),
        (1, None),
        "below the minimum"
    );
    assert_eq!(handle.state(), BreakerState::Closed);

    advance(ms(500)).await;
    fail_times(&mut svc, &backend, 1).await;

    assert_eq!(handle.state(), BreakerState::Open);
}

// === Classifiers ===

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_never_count() {
    let inner = service_fn(|req: &'static str| async move {
        if req == "ok" {
            Ok::<_, BoxError>(req)
        } else {
            Err(BoxError::from(req))
        }
    });
    let classifier = classify_fn(|result: Result<&&'static str, &BoxError>| match result {
        Ok(_) => Outcome::Success,
        Err(e) if e.to_string() == "cancelled" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    });
    let layer = CircuitBreakerLayer::new("payments", seed_config())
        .unwrap()
        .with_classifier(classifier);
    let handle = layer.handle();
    let mut svc = layer.layer(inner);

    svc.ready().await.unwrap().call("failed").await.unwrap_err();
    for _ in 0..10 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call("cancelled")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cancelled",
            "the caller still sees the error"
        );
    }
    let window = handle.snapshot().window;
    assert_eq!((window.calls, window.failures), (1, 1));
    assert_eq!(handle.state(), BreakerState::Closed);

    // Nor did the ignored calls break the run of failures.
    svc.ready().await.unwrap().call("failed").await.unwrap_err();
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn http_classifier_counts_server_errors_but_not_client_errors() {
    let inner = service_fn(|status: u16| async move {
        Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
    });
    let layer = CircuitBreakerLayer::new("payments", seed_config())
        .unwrap()
        .with_classifier(HttpClassifier::server_errors());
    let handle = layer.handle();
    let mut svc = layer.layer(inner);
    let mut status = async |code: u16| {
        svc.ready()
            .await
            .unwrap()
            .call(code)
            .await
            .map(|res| res.status().as_u16())
    };

    for _ in 0..5 {
        assert_eq!(status(404).await.unwrap(), 404);
    }
    assert_eq!(status(503).await.unwrap(), 503);
    assert_eq!(
        status(404).await.unwrap(),
        404,
        "a 404 is a success: the run restarts"
    );
    assert_eq!(status(503).await.unwrap(), 503);
    assert_eq!(handle.state(), BreakerState::Closed);

    assert_eq!(status(503).await.unwrap(), 503);

    assert_eq!(handle.state(), BreakerState::Open);
    assert!(
        status(200)
            .await
            .unwrap_err()
            .is::<switchyard_breaker::BreakerOpen>()
    );
}

// === Growing waits and hung probes ===

#[tokio::test(start_paused = true)]
async fn failed_probes_grow_the_open_wait_up_to_its_maximum_and_closing_resets_it() {
    let config = seed_config().with_exponential_open_wait(2.0, ms(300));
    let (mut svc, backend, handle) = breaker(config);
    let retry_after = async |svc: &mut CircuitBreaker<_>| {
        breaker_open(&call(svc, 1).await.expect_err("open")).retry_after()
    };
    fail_times(&mut svc, &backend, 2).await;
    assert_eq!(retry_after(&mut svc).await, Some(ms(100)));

    advance(ms(100)).await;
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(retry_after(&mut svc).await, Some(ms(200)));

    advance(ms(199)).await;
    assert_eq!(retry_after(&mut svc).await, Some(ms(1)));
    advance(ms(1)).await;
    fail_times(&mut svc, &backend, 1).await;
    assert_eq!(
        retry_after(&mut svc).await,
        Some(ms(300)),
        "400 ms capped at 300 ms"
    );

    advance(ms(300)).await;
    call(&mut svc, 1).await.unwrap();
    call(&mut svc, 2).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    fail_times(&mut svc, &backend, 2).await;
    assert_eq!(
        retry_after(&mut svc).await,
        Some(ms(100)),
        "closing reset the wait"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_reopens_after_max_wait_in_half_open_and_a_fresh_probe_follows() {
    let config = seed_config()
        .with_half_open(1, 1)
        .with_max_wait_in_half_open(ms(50));
    let (mut svc, backend, handle) = breaker(config);
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    backend.hang(true);
    let mut prober = svc.clone();
    prober.ready().await.unwrap();
    let mut hung = prober.call(1);
    assert!(poll_once(&mut hung).is_pending());
    backend.hang(false);

    advance(ms(20)).await;
    let err = call(&mut svc, 2).await.expect_err("the one slot is taken");
    assert_eq!(breaker_open(&err).retry_after(), None);
    assert_eq!(handle.state(), BreakerState::HalfOpen);

    advance(ms(30)).await;
    let err = call(&mut svc, 3)
        .await
        .expect_err("no verdict in 50 ms: reopened");
    assert_eq!(
        breaker_open(&err).retry_after(),
        Some(ms(100)),
        "the wait did not grow"
    );
    assert_eq!(handle.state(), BreakerState::Open);

    advance(ms(100)).await;
    assert_eq!(
        call(&mut svc, 4).await.unwrap(),
        4,
        "a fresh probe, though the old one hangs"
    );
    assert_eq!(handle.state(), BreakerState::Closed);
    drop(hung);
    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "the stale probe changed nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_wait_multiplier_is_capped_at_the_maximum_wait() {
    let config = seed_config().with_exponential_open_wait(1e30, Duration::from_secs(3600));
    config
        .validate()
        .expect("any finite multiplier >= 1 is valid");
    let (mut svc, backend, handle) = breaker(config);
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;

    fail_times(&mut svc, &backend, 1).await;

    assert_eq!(handle.state(), BreakerState::Open);
    let err = call(&mut svc, 1).await.expect_err("reopened");
    assert_eq!(
        breaker_open(&err).retry_after(),
        Some(Duration::from_secs(3600))
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_wait_of_duration_max_holds_the_breaker_open() {
    let config = seed_config()
        .with_wait_in_open(Duration::MAX)
        .with_exponential_open_wait(1.0, Duration::MAX);
    config.validate().expect("a maximal wait is valid");
    let (mut svc, backend, handle) = breaker(config);

    fail_times(&mut svc, &backend, 2).await;

    assert_eq!(handle.state(), BreakerState::Open);
    advance(Duration::from_secs(365 * 24 * 3600)).await;
    assert!(is_refused(&call(&mut svc, 1).await));
}

// === Backpressure ===

#[tokio::test(start_paused = true)]
async fn backpressure_mode_stays_pending_while_open_and_readies_when_the_wait_ends() {
    let (mut svc, backend, handle) = breaker(seed_config().with_mode(BreakerMode::Backpressure));
    fail_times(&mut svc, &backend, 2).await;
    let mut waiting = mock::Spawn::new(svc.clone());

    assert!(waiting.poll_ready::<u32>().is_pending());
    advance(ms(99)).await;
    assert!(!waiting.is_woken());
    assert!(waiting.poll_ready::<u32>().is_pending());

    advance(ms(1)).await;

    assert!(
        waiting.is_woken(),
        "the end of the open wait woke the waiter"
    );
    assert!(matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    assert_eq!(waiting.call(7).await.unwrap(), 7);
    assert_eq!(backend.calls(), 3);
    assert_eq!(handle.snapshot().rejected, 0, "backpressure never refuses");
}

#[tokio::test(start_paused = true)]
async fn backpressure_waiter_is_woken_when_a_forced_open_is_released() {
    let (svc, backend, handle) = breaker(seed_config().with_mode(BreakerMode::Backpressure));
    handle.force_open();
    let mut waiting = mock::Spawn::new(svc);
    assert!(waiting.poll_ready::<u32>().is_pending());
    advance(Duration::from_secs(3600)).await;
    assert!(
        waiting.poll_ready::<u32>().is_pending(),
        "no wait ends a forced open"
    );

    handle.release();

    assert!(waiting.is_woken());
    assert!(matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    assert_eq!(waiting.call(5).await.unwrap(), 5);
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn backpressure_waiter_is_woken_when_a_probe_slot_frees() {
    let (mut svc, backend, _) = breaker(seed_config().with_mode(BreakerMode::Backpressure));
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    backend.hang(true);
    let mut prober = svc.clone();
    prober.ready().await.unwrap();
    let probe = prober.call(1);
    backend.hang(false);
    let mut waiting = mock::Spawn::new(svc.clone());
    assert!(waiting.poll_ready::<u32>().is_pending());

    drop(probe);

    assert!(waiting.is_woken());
    assert!(matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))));
    assert_eq!(waiting.call(2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn backpressure_waiter_is_not_wedged_by_a_hung_probe() {
    let config = seed_config()
        .with_mode(BreakerMode::Backpressure)
        .with_half_open(1, 1)
        .with_max_wait_in_half_open(ms(50));
    let (mut svc, backend, handle) = breaker(config);
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    backend.hang(true);
    let mut prober = svc.clone();
    prober.ready().await.unwrap();
    let _hung = prober.call(1);
    backend.hang(false);
    let mut waiting = mock::Spawn::new(svc.clone());
    assert!(waiting.poll_ready::<u32>().is_pending());

    // The half-open spell gives up at 50 ms and the breaker reopens for 100 ms: by then a
    // fresh probe may go, and the waiter must be the one to take it.
    advance(ms(150)).await;

    let woken = waiting.is_woken();
    assert!(
        matches!(waiting.poll_ready::<u32>(), Poll::Ready(Ok(()))),
        "the waiter is still pending, though a fresh probe may go"
    );
    assert!(woken, "the waiter could go but was never woken");
    assert_eq!(waiting.call(2).await.unwrap(), 2);
    assert_eq!(handle.state(), BreakerState::Closed);
}

// === Inner readiness ===

#[tokio::test(start_paused = true)]
async fn inner_poll_ready_errors_propagate_and_count_for_nothing() {
    let (mut svc, backend, handle) = breaker(seed_config());
    backend.fail_poll_ready(true);

    for _ in 0..3 {
        let err = svc
            .ready()
            .await
            .expect_err("the inner service is not ready");
        assert_eq!(err.to_string(), BACKEND_NOT_READY);
    }

    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().window.failures, 0);
    assert_eq!(backend.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_gives_back_the_probe_slot() {
    let (mut svc, backend, handle) = breaker(seed_config());
    fail_times(&mut svc, &backend, 2).await;
    advance(ms(100)).await;
    let mut a = svc.clone();
    backend.fail_poll_ready(true);
    let err = a.ready().await.expect_err("the inner service is not ready");
    assert_eq!(err.to_string(), BACKEND_NOT_READY);
    assert_eq!(handle.state(), BreakerState::HalfOpen);

    backend.fail_poll_ready(false);

    let mut b = svc.clone();
    assert_eq!(call(&mut b, 2).await.unwrap(), 2, "the slot came back");
}
