//! The rate limit layers through their public API, under paused tokio time.

use std::time::Duration;

use switchyard_core::test_util::{ms, poll_once};
use switchyard_core::{RejectionKind, find_rejection};
use switchyard_ratelimit::{
    KeyedRateLimitLayer, Rate, RateLimitConfig, RateLimitLayer, RateLimitMode, RateLimited,
};
use tokio::time::advance;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|n: u32| async move { Ok::<_, BoxError>(n) })
}

fn limited(
    rate: &str,
    mode: RateLimitMode,
) -> impl Service<u32, Response = u32, Error = BoxError> + Clone {
    let config = RateLimitConfig::new(rate.parse().unwrap()).with_mode(mode);
    RateLimitLayer::new("api", &config).unwrap().layer(echo())
}

async fn call<S: Service<u32, Response = u32, Error = BoxError>>(
    svc: &mut S,
    n: u32,
) -> Result<u32, BoxError> {
    svc.ready().await?.call(n).await
}

fn rate_limited(err: &BoxError) -> &RateLimited {
    err.downcast_ref::<RateLimited>().expect("a RateLimited")
}

#[tokio::test(start_paused = true)]
async fn clones_together_admit_the_quota_not_a_multiple_of_it() {
    let svc = limited("10/s", RateLimitMode::Reject);
    let mut clones: Vec<_> = (0..8).map(|_| svc.clone()).collect();
    let mut admitted = 0;
    for round in 0..5 {
        for clone in &mut clones {
            if call(clone, round).await.is_ok() {
                admitted += 1;
            }
        }
    }
    assert_eq!(
        admitted, 10,
        "40 calls from 8 clones, one shared quota of 10"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_carries_when_to_retry_and_the_limit_admits_again_then() {
    let mut svc = limited("1/s", RateLimitMode::Reject);
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    advance(ms(250)).await;

    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(err.to_string(), "rate limited: api");
    assert_eq!(rate_limited(&err).retry_after(), ms(750));
    let rejection = find_rejection(&*err).expect("a registered rejection");
    assert_eq!(rejection.kind(), RejectionKind::RateLimited);
    assert_eq!(rejection.retry_after(), Some(ms(750)));

    let response = switchyard_core::rejection::http_response(rejection);
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    advance(ms(750)).await;
    assert_eq!(call(&mut svc, 3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_decided_afresh_at_every_poll_ready() {
    let mut svc = limited("1/s", RateLimitMode::Reject);
    call(&mut svc, 1).await.unwrap();
    svc.ready().await.unwrap(); // refused now...
    advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap(); // ...admitted when asked again
    assert_eq!(svc.call(2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_waits_in_poll_ready_within_max_wait() {
    let mut svc = limited("1/100ms", RateLimitMode::Wait { max_wait: ms(150) });
    call(&mut svc, 1).await.unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
    assert_eq!(
        start.elapsed(),
        ms(100),
        "waited exactly until the limit admitted it"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_mode_refuses_at_once_when_the_wait_would_exceed_max_wait() {
    let mut svc = limited("1/s", RateLimitMode::Wait { max_wait: ms(100) });
    call(&mut svc, 1).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert_eq!(rate_limited(&err).retry_after(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn burst_admits_a_quiet_spell_s_savings_at_once() {
    let config = RateLimitConfig::new("1/s".parse().unwrap()).with_burst(3);
    let mut svc = RateLimitLayer::new("api", &config).unwrap().layer(echo());
    for n in 0..3 {
        call(&mut svc, n).await.unwrap();
    }
    assert!(call(&mut svc, 3).await.is_err());
}

fn keyed_layer() -> KeyedRateLimitLayer<u32, impl Fn(&u32) -> u32 + Clone> {
    KeyedRateLimitLayer::new(
        "tenants",
        &RateLimitConfig::new("1/s".parse().unwrap()),
        |n: &u32| n % 10,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_limit() {
    let layer = keyed_layer();
    let mut svc = layer.layer(echo());
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    let err = call(&mut svc, 11).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "rate limited: tenants",
        "the key stays out of the error"
    );
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2, "key 2 is untouched");
    assert_eq!(layer.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn cleanup_forgets_keys_that_hold_no_information() {
    let layer = keyed_layer();
    let mut svc = layer.layer(echo());
    for n in 0..5 {
        call(&mut svc, n).await.unwrap();
    }
    assert_eq!(layer.len(), 5);
    layer.cleanup();
    assert_eq!(layer.len(), 5, "each key's next call is still limited");
    // One period on, each bucket is full again; one emission interval after that, its state
    // says nothing a fresh key would not.
    advance(Duration::from_secs(1)).await;
    layer.cleanup();
    assert_eq!(layer.len(), 5, "a bucket that just refilled is kept");
    advance(Duration::from_secs(1)).await;
    layer.cleanup();
    assert_eq!(layer.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_cleanup_task_runs_on_tokio_time() {
    let layer = keyed_layer();
    let mut svc = layer.layer(echo());
    call(&mut svc, 7).await.unwrap();
    let task = layer.spawn_cleanup(Duration::from_secs(5));
    advance(Duration::from_secs(4)).await;
    tokio::task::yield_now().await;
    assert_eq!(layer.len(), 1, "no cleanup before the first interval");
    advance(Duration::from_secs(1)).await;
    // Let the woken cleanup task run (current-thread runtime: it runs when this one yields).
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(layer.len(), 0);
    task.abort();
}

fn keyed_waiting(
    rate: &str,
    max_wait: Duration,
) -> impl Service<u32, Response = u32, Error = BoxError> + Clone {
    let config =
        RateLimitConfig::new(rate.parse().unwrap()).with_mode(RateLimitMode::Wait { max_wait });
    KeyedRateLimitLayer::new("tenants", &config, |n: &u32| n % 10)
        .unwrap()
        .layer(echo())
}

#[tokio::test(start_paused = true)]
async fn keyed_wait_mode_waits_for_the_keys_next_cell_while_other_keys_pass() {
    let mut svc = keyed_waiting("1/100ms", ms(150));
    call(&mut svc, 1).await.unwrap();
    let start = tokio::time::Instant::now();
    svc.ready().await.unwrap();
    let mut waiting = Box::pin(svc.call(11));
    assert!(
        poll_once(&mut waiting).is_pending(),
        "key 1 waits for its next cell"
    );

    // The service is free for other calls meanwhile: key 2 passes at once.
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::ZERO);

    assert_eq!(waiting.await.unwrap(), 11);
    assert_eq!(
        start.elapsed(),
        ms(100),
        "waited exactly until key 1 was admitted"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_wait_mode_refuses_at_once_when_the_wait_would_exceed_max_wait() {
    let mut svc = keyed_waiting("1/s", ms(100));
    call(&mut svc, 3).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = call(&mut svc, 13).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert!(rate_limited(&err).retry_after() > ms(900));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_that_loses_its_cell_waits_again_within_its_deadline() {
    let mut svc = keyed_waiting("1/100ms", ms(250));
    call(&mut svc, 4).await.unwrap();
    let start = tokio::time::Instant::now();
    svc.ready().await.unwrap();
    let mut waiting = Box::pin(svc.call(14));
    assert!(poll_once(&mut waiting).is_pending());

    // A caller takes the cell at 100 ms, before the waiter wakes for it.
    advance(ms(100)).await;
    assert_eq!(call(&mut svc, 24).await.unwrap(), 24);
    assert!(
        poll_once(&mut waiting).is_pending(),
        "waits for the cell at 200 ms"
    );
    assert_eq!(waiting.await.unwrap(), 14);
    assert_eq!(start.elapsed(), ms(200));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_that_loses_its_cell_is_refused_when_the_next_is_past_its_deadline() {
    let mut svc = keyed_waiting("1/100ms", ms(150));
    call(&mut svc, 4).await.unwrap();
    svc.ready().await.unwrap();
    let mut waiting = Box::pin(svc.call(14));
    assert!(poll_once(&mut waiting).is_pending());

    advance(ms(100)).await;
    assert_eq!(call(&mut svc, 24).await.unwrap(), 24);
    // The next cell, at 200 ms, is past the waiter's deadline at 150 ms: refused on waking.
    let std::task::Poll::Ready(Err(err)) = poll_once(&mut waiting) else {
        panic!("refused at once");
    };
    assert_eq!(rate_limited(&err).retry_after(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_dropped_before_its_cell_never_calls_the_inner_service() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = {
        let calls = std::sync::Arc::clone(&calls);
        service_fn(move |n: u32| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok::<_, BoxError>(n) }
        })
    };
    let config = RateLimitConfig::new("1/s".parse().unwrap()).with_mode(RateLimitMode::Wait {
        max_wait: Duration::from_secs(2),
    });
    let mut svc = KeyedRateLimitLayer::new("k", &config, |n: &u32| *n)
        .unwrap()
        .layer(counted);
    call(&mut svc, 5).await.unwrap();
    svc.ready().await.unwrap();
    let mut waiting = Box::pin(svc.call(5));
    assert!(poll_once(&mut waiting).is_pending());
    drop(waiting);
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the first call"
    );
    assert_eq!(
        call(&mut svc, 5).await.unwrap(),
        5,
        "the cell was not taken by the dropped waiter"
    );
}

#[test]
fn rates_read_in_the_usual_forms() {
    let read = |s: &str| s.parse::<Rate>().map(|r| (r.count, r.per));
    assert_eq!(read("100/s"), Ok((100, Duration::from_secs(1))));
    assert_eq!(read("5000/min"), Ok((5000, Duration::from_secs(60))));
    assert_eq!(read("3/hour"), Ok((3, Duration::from_secs(3600))));
    assert_eq!(read("10/250ms"), Ok((10, ms(250))));
    assert_eq!(read("1000/ms"), Ok((1000, ms(1))));
    for bad in ["100", "x/s", "100/fortnight", "-1/s", ""] {
        let err = bad.parse::<Rate>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("invalid rate `{bad}`")),
            "{err}"
        );
    }
}

#[test]
fn each_bad_field_is_named() {
    let bad = |json: &str| {
        let config: RateLimitConfig = serde_json::from_str(json).unwrap();
        let err = config.validate().unwrap_err();
        assert_eq!(RateLimitLayer::new("x", &config).unwrap_err(), err);
        err.field().to_owned()
    };
    assert_eq!(bad(r#"{"rate": "0/s"}"#), "rate");
    assert_eq!(bad(r#"{"rate": "1/0s"}"#), "rate");
    assert_eq!(bad(r#"{"rate": "1/s", "burst": 0}"#), "burst");
    assert_eq!(
        bad(r#"{"rate": "1/600years"}"#),
        "rate",
        "beyond governor's 584 years"
    );
    assert_eq!(
        bad(r#"{"rate": "1/day", "burst": 300000}"#),
        "burst",
        "its span overflows"
    );
    assert_eq!(
        bad(r#"{"rate": "1/s", "mode": {"wait": {"max_wait": "0s"}}}"#),
        "mode.wait.max_wait"
    );
    let unknown =
        serde_json::from_str::<RateLimitConfig>(r#"{"rate": "1/s", "brust": 3}"#).unwrap_err();
    assert!(unknown.to_string().contains("brust"), "{unknown}");
    let unreadable = serde_json::from_str::<RateLimitConfig>(r#"{"rate": "lots"}"#).unwrap_err();
    assert!(
        unreadable.to_string().contains("invalid rate `lots`"),
        "{unreadable}"
    );
}

#[test]
fn a_config_round_trips_through_json() {
    let json = r#"{"rate":"100/1s","burst":20,"mode":{"wait":{"max_wait":"50ms"}}}"#;
    let config: RateLimitConfig = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::to_string(&config).unwrap(), json);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_holds_no_readiness_so_other_keys_are_served_meanwhile() {
    // The inner admits one call at a time; readiness takes its one permit.
    let config = RateLimitConfig::new("1/s".parse().unwrap()).with_mode(RateLimitMode::Wait {
        max_wait: Duration::from_secs(2),
    });
    let inner = tower::limit::ConcurrencyLimitLayer::new(1)
        .layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    let mut svc = KeyedRateLimitLayer::new("k", &config, |n: &u32| n % 10)
        .unwrap()
        .layer(inner);
    call(&mut svc, 1).await.unwrap();
    svc.ready().await.unwrap();
    let mut waiting = Box::pin(svc.call(11));
    assert!(poll_once(&mut waiting).is_pending(), "key 1 waits a second");
    // Had the waiter taken the readied service (and its permit), this would never be ready.
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
    assert_eq!(waiting.await.unwrap(), 11);
}
