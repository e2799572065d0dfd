//! The stack built from a config, under paused tokio time: its order holds (one permit and one
//! slot per call, an open breaker stops retries, timeouts are retried), fallbacks, and bad
//! configs named by path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchyard_breaker::{BreakerOpen, BreakerState};
use switchyard_core::{BoxError, RejectionKind, find_rejection};
use switchyard_ratelimit::RateLimited;
use switchyard_resilience::{
    FallbackLayer, Pattern, ResilienceConfig, ResilienceLayer, StackRegistry, TimedOut,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A backend that fails its first `failures` calls, then answers; counts its calls, and takes
/// `delay` per call.
#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicU32>,
    failures: u32,
    delay: Duration,
}

impl Flaky {
    fn new(failures: u32) -> Self {
        Self {
            calls: Arc::default(),
            failures,
            delay: Duration::ZERO,
        }
    }

    fn slow(failures: u32, delay: Duration) -> Self {
        Self {
            delay,
            ..Self::new(failures)
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + use<> {
        let flaky = self.clone();
        service_fn(move |n: u32| {
            let call = flaky.calls.fetch_add(1, Ordering::SeqCst);
            let (failures, delay) = (flaky.failures, flaky.delay);
            async move {
                tokio::time::sleep(delay).await;
                if call < failures {
                    Err::<u32, BoxError>("backend failed".into())
                } else {
                    Ok(n)
                }
            }
        })
    }
}

fn stack(json: &str) -> ResilienceLayer {
    ResilienceLayer::new("orders", &ResilienceConfig::from_json(json).unwrap()).unwrap()
}

async fn call<S: Service<u32, Response = u32, Error = BoxError>>(
    svc: &mut S,
) -> Result<u32, BoxError> {
    svc.ready().await?.call(7).await
}

#[tokio::test(start_paused = true)]
async fn an_empty_config_passes_calls_straight_through() {
    let flaky = Flaky::new(1);
    let mut svc = stack("{}").layer(flaky.service());
    assert!(call(&mut svc).await.is_err());
    assert_eq!(call(&mut svc).await.unwrap(), 7);
    assert_eq!(flaky.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retried_call_takes_one_rate_limit_permit() {
    // Two calls a second; the first call fails twice and succeeds on its third attempt.
    let flaky = Flaky::new(2);
    let mut svc = stack(
        r#"{ "rate_limit": { "rate": "2/s" },
             "retry": { "max_attempts": 3, "backoff": { "initial": "1ms" }, "jitter": "none" } }"#,
    )
    .layer(flaky.service());
    assert_eq!(call(&mut svc).await.unwrap(), 7);
    assert_eq!(flaky.calls(), 3, "three attempts");
    assert_eq!(
        call(&mut svc).await.unwrap(),
        7,
        "the second permit is still there"
    );
    let err = call(&mut svc).await.unwrap_err();
    assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    assert_eq!(flaky.calls(), 4, "the refused call never reached the retry");
}

#[tokio::test(start_paused = true)]
async fn a_retried_call_holds_one_bulkhead_slot_throughout() {
    let flaky = Flaky::slow(1, Duration::from_millis(50));
    let layer = stack(
        r#"{ "bulkhead": { "max_concurrent_calls": 1 },
             "retry": { "max_attempts": 2, "backoff": { "initial": "10ms" }, "jitter": "none" } }"#,
    );
    let controller = layer.handles().bulkhead.unwrap();
    let mut svc = layer.layer(flaky.service());
    svc.ready().await.unwrap();
    let first = tokio::spawn(svc.call(1));
    // Mid-retry (after the first attempt's 50 ms and during the backoff), the slot is held.
    tokio::time::sleep(Duration::from_millis(55)).await;
    assert_eq!(controller.stats().in_flight, 1);
    let err = call(&mut svc).await.unwrap_err();
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::BulkheadFull)
    );
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(controller.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_before_the_retry_makes_any_attempt() {
    let flaky = Flaky::new(u32::MAX);
    let layer = stack(
        r#"{ "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 2 } } },
             "retry": { "max_attempts": 3, "backoff": { "initial": "1ms" }, "jitter": "none" } }"#,
    );
    let breaker = layer.handles().breaker.unwrap();
    let mut svc = layer.layer(flaky.service());
    call(&mut svc).await.unwrap_err();
    call(&mut svc).await.unwrap_err();
    assert_eq!(flaky.calls(), 6, "two calls of three attempts each");
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "the breaker counted two calls, not six attempts"
    );
    let err = call(&mut svc).await.unwrap_err();
    assert!(err.downcast_ref::<BreakerOpen>().is_some(), "{err}");
    assert_eq!(flaky.calls(), 6, "no attempt once open");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_retried_and_the_total_timeout_bounds_the_call() {
    let slow = Flaky::slow(0, Duration::from_secs(10));
    let mut svc = stack(
        r#"{ "timeout": "100ms", "total_timeout": "250ms",
             "retry": { "max_attempts": 5, "backoff": { "initial": "10ms" }, "jitter": "none", "budget": null } }"#,
    )
    .layer(slow.service());
    let start = Instant::now();
    let err = call(&mut svc).await.unwrap_err();
    let timed_out = err.downcast_ref::<TimedOut>().expect("a TimedOut");
    assert_eq!(
        timed_out.after(),
        Duration::from_millis(250),
        "the total deadline"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(slow.calls(), 3, "attempts at 0, 110 and 230 ms");
    assert_eq!(err.to_string(), "timed out after 250ms: orders");
}

#[tokio::test(start_paused = true)]
async fn a_duplex_stack_never_retries_and_holds_no_bulkhead_slot() {
    let flaky = Flaky::new(1);
    let config = ResilienceConfig::from_json(
        r#"{ "bulkhead": { "max_concurrent_calls": 1 }, "retry": { "max_attempts": 3 } }"#,
    )
    .unwrap();
    let layer = ResilienceLayer::new("stream", &config)
        .unwrap()
        .for_pattern(Pattern::Duplex);
    assert!(layer.handles().bulkhead.is_none());
    let mut svc = layer.layer(flaky.service());
    call(&mut svc).await.unwrap_err();
    assert_eq!(flaky.calls(), 1, "an open is never retried");
}

#[tokio::test(start_paused = true)]
async fn the_fallback_answers_a_failure_and_a_rejection() {
    let fallback = service_fn(|n: u32| async move { Ok::<_, BoxError>(n + 1000) });
    let flaky = Flaky::new(1);
    let layer = stack(r#"{ "rate_limit": { "rate": "1/s" } }"#);
    let mut svc = FallbackLayer::new("orders", fallback).layer(layer.layer(flaky.service()));
    assert_eq!(call(&mut svc).await.unwrap(), 1007, "the backend failed");
    assert_eq!(
        call(&mut svc).await.unwrap(),
        1007,
        "the rate limit refused"
    );
    assert_eq!(flaky.calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        call(&mut svc).await.unwrap(),
        7,
        "a success is the primary's"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_never_reaches_the_fallback() {
    let used = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&used);
    let fallback = service_fn(move |n: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(n) }
    });
    let slow = Flaky::slow(1, Duration::from_secs(1));
    let mut svc = FallbackLayer::new("orders", fallback).layer(slow.service());
    svc.ready().await.unwrap();
    let pending = svc.call(7);
    tokio::select! {
        _ = pending => panic!("the call takes a second"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(used.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_registry_snapshots_and_resets_every_stack() {
    let registry = StackRegistry::new();
    let layer = stack(
        r#"{ "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 1 } } }, "bulkhead": {} }"#,
    );
    registry.register(layer.handles());
    registry.register(stack("{}").handles());
    let flaky = Flaky::new(1);
    let mut svc = layer.layer(flaky.service());
    call(&mut svc).await.unwrap_err();

    assert_eq!(
        registry.names(),
        ["orders"],
        "the same name replaces the older stack"
    );
    let json = serde_json::to_value(registry.snapshot()).unwrap();
    assert_eq!(json[0]["name"], "orders");
    assert!(
        json[0]["circuit_breaker"].is_null(),
        "the newer stack has no breaker: {json}"
    );

    registry.register(layer.handles());
    assert_eq!(
        registry.get("orders").unwrap().breaker.unwrap().state(),
        BreakerState::Open
    );
    registry.reset_all();
    assert_eq!(
        registry.get("orders").unwrap().breaker.unwrap().state(),
        BreakerState::Closed
    );
    assert!(registry.remove("orders").is_some());
    assert!(registry.snapshot().is_empty());
}

#[test]
fn the_stack_service_is_clone_send_sync_and_boxable() {
    let svc = stack(r#"{ "timeout": "1s", "retry": {}, "bulkhead": {}, "circuit_breaker": {}, "rate_limit": { "rate": "1/s" } }"#)
        .layer(service_fn(|n: u32| std::future::ready(Ok::<_, BoxError>(n))));
    let boxed = tower::util::BoxCloneSyncService::new(svc);
    let _clone = boxed.clone();
}

#[test]
fn each_bad_config_is_refused_with_its_json_path() {
    let path = |json: &str| {
        ResilienceConfig::from_json(json)
            .unwrap_err()
            .field()
            .to_owned()
    };
    let cases = [
        (r#"{ "timeout": "0s" }"#, "timeout"),
        (r#"{ "timeout": "soon" }"#, "timeout"),
        (
            r#"{ "total_timeout": "1s", "timeout": "2s" }"#,
            "total_timeout",
        ),
        (r#"{ "retyr": {} }"#, "retyr"),
        (r#"not json"#, "config"),
        (r#"{ "rate_limit": { "rate": "0/s" } }"#, "rate_limit.rate"),
        (r#"{ "rate_limit": { "rate": "lots" } }"#, "rate_limit.rate"),
        (
            r#"{ "rate_limit": { "rate": "1/s", "burst": 0 } }"#,
            "rate_limit.burst",
        ),
        (
            r#"{ "bulkhead": { "max_concurrent_calls": 0 } }"#,
            "bulkhead.max_concurrent_calls",
        ),
        (
            r#"{ "bulkhead": { "policy": "sometimes" } }"#,
            "bulkhead.policy",
        ),
        (
            r#"{ "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 0 } } } }"#,
            "circuit_breaker.trip.consecutive_failures.threshold",
        ),
        (
            r#"{ "retry": { "max_attempts": 0 } }"#,
            "retry.max_attempts",
        ),
        (
            r#"{ "retry": { "backoff": { "multiplier": 0.5 } } }"#,
            "retry.backoff.multiplier",
        ),
        (
            r#"{ "retry": { "backoff": { "initial": "later" } } }"#,
            "retry.backoff.initial",
        ),
        (
            r#"{ "retry": { "budget": { "ttl": "2m" } } }"#,
            "retry.budget.ttl",
        ),
        (r#"{ "retry": { "jitter": "wobbly" } }"#, "retry.jitter"),
        (
            r#"{ "retry": { "methods": ["GET", "NOT A METHOD"] } }"#,
            "retry.methods[1]",
        ),
        (r#"{ "fallback": " " }"#, "fallback"),
        (r#"{ "timeout": 5 }"#, "timeout"),
    ];
    for (json, expected) in cases {
        assert_eq!(path(json), expected, "{json}");
    }
    assert!(cases.len() >= 15);
}
