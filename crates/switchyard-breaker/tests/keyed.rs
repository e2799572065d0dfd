//! Keyed breakers through the public API: one breaker per key, isolated from the others,
//! bounded in number, inspected through one handle.

mod support;

use switchyard_breaker::{
    BreakerMode, BreakerOpen, BreakerState, CircuitBreakerConfig, KeyedBreakerHandle,
    KeyedCircuitBreaker, KeyedCircuitBreakerLayer, Trip,
};
use switchyard_core::{BoxError, ErrorsAsFailures, RejectionKind, find_rejection};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

use support::{BACKEND_FAILED, is_send_sync_static, ms, seed_config};

/// A request: the key it is for, and whether the backend fails it.
type Req = (&'static str, bool);

fn key_of(req: &Req) -> &'static str {
    req.0
}

/// A keyed breaker "routes" (seed config per key) around a backend answering `Ok(key)` or
/// failing as the request says.
fn keyed(
    max_keys: usize,
) -> (
    impl Service<Req, Response = &'static str, Error = BoxError> + Clone,
    KeyedBreakerHandle<&'static str>,
) {
    let layer = KeyedCircuitBreakerLayer::new("routes", seed_config(), max_keys, key_of)
        .expect("a valid config");
    let inner = service_fn(|(key, fail): Req| async move {
        if fail {
            Err(BoxError::from(BACKEND_FAILED))
        } else {
            Ok(key)
        }
    });
    let handle = layer.handle();
    (layer.layer(inner), handle)
}

async fn send<S>(svc: &mut S, key: &'static str, fail: bool) -> Result<&'static str, BoxError>
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    svc.ready().await?.call((key, fail)).await
}

/// Opens `key`'s breaker with two failures.
async fn trip<S>(svc: &mut S, key: &'static str)
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    for _ in 0..2 {
        let err = send(svc, key, true).await.expect_err("the backend fails");
        assert_eq!(err.to_string(), BACKEND_FAILED);
    }
}

fn state(handle: &KeyedBreakerHandle<&'static str>, key: &'static str) -> Option<BreakerState> {
    handle.get(&key).map(|breaker| breaker.state())
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_opens_only_its_own_breaker() {
    let (mut svc, handle) = keyed(8);

    trip(&mut svc, "a").await;

    let err = send(&mut svc, "a", false).await.expect_err("a is open");
    assert_eq!(err.to_string(), "circuit open: routes/a");
    let open = err.downcast_ref::<BreakerOpen>().expect("a BreakerOpen");
    assert_eq!(
        (open.name(), open.retry_after()),
        ("routes/a", Some(ms(100)))
    );
    let rejection = find_rejection(&*err).expect("registered by the keyed layer");
    assert_eq!(rejection.kind(), RejectionKind::CircuitOpen);
    assert_eq!(
        send(&mut svc, "b", false).await.unwrap(),
        "b",
        "b still flows"
    );
    assert_eq!(state(&handle, "a"), Some(BreakerState::Open));
    assert_eq!(state(&handle, "b"), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_keys_breaker_recovers_after_its_wait() {
    let (mut svc, handle) = keyed(8);
    trip(&mut svc, "a").await;

    advance(ms(100)).await;

    assert_eq!(send(&mut svc, "a", false).await.unwrap(), "a");
    assert_eq!(state(&handle, "a"), Some(BreakerState::HalfOpen));
    assert_eq!(send(&mut svc, "a", false).await.unwrap(), "a");
    assert_eq!(state(&handle, "a"), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn clones_share_every_keys_breaker() {
    let (mut a, handle) = keyed(8);
    let mut b = a.clone();

    send(&mut a, "x", true).await.unwrap_err();
    send(&mut b, "x", true).await.unwrap_err();

    assert_eq!(state(&handle, "x"), Some(BreakerState::Open));
    assert!(
        send(&mut a, "x", false)
            .await
            .unwrap_err()
            .is::<BreakerOpen>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_key_beyond_max_keys_evicts_the_least_recently_used_closed_breaker() {
    let (mut svc, handle) = keyed(2);
    send(&mut svc, "a", false).await.unwrap();
    send(&mut svc, "b", false).await.unwrap();
    send(&mut svc, "a", false).await.unwrap();

    send(&mut svc, "c", false).await.unwrap();

    assert_eq!(handle.len(), 2);
    assert!(handle.get(&"b").is_none(), "b was used least recently");
    assert!(handle.get(&"a").is_some());
    assert!(handle.get(&"c").is_some());
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_kept_in_preference_to_a_closed_one() {
    let (mut svc, handle) = keyed(2);
    trip(&mut svc, "a").await;
    send(&mut svc, "b", false).await.unwrap();

    send(&mut svc, "c", false).await.unwrap();

    assert_eq!(handle.len(), 2);
    assert!(
        handle.get(&"b").is_none(),
        "the closed breaker went, though used later"
    );
    assert_eq!(state(&handle, "a"), Some(BreakerState::Open));
    assert!(
        send(&mut svc, "a", false)
            .await
            .unwrap_err()
            .is::<BreakerOpen>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_an_operator_forced_open_is_evicted_last() {
    let (mut svc, handle) = keyed(2);
    send(&mut svc, "a", false).await.unwrap();
    handle.get(&"a").expect("a has a breaker").force_open();
    trip(&mut svc, "b").await;

    send(&mut svc, "c", false).await.unwrap();

    assert!(
        handle.get(&"b").is_none(),
        "the automatically open breaker went first"
    );
    assert_eq!(state(&handle, "a"), Some(BreakerState::ForcedOpen));
}

#[tokio::test(start_paused = true)]
async fn when_every_breaker_is_open_the_least_recently_used_goes() {
    let (mut svc, handle) = keyed(2);
    trip(&mut svc, "a").await;
    trip(&mut svc, "b").await;

    send(&mut svc, "c", false).await.unwrap();

    assert!(handle.get(&"a").is_none());
    assert_eq!(state(&handle, "b"), Some(BreakerState::Open));
    assert_eq!(handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_handle_lists_every_keys_breaker_in_name_order() {
    let (mut svc, handle) = keyed(8);
    assert!(handle.is_empty());

    send(&mut svc, "b", false).await.unwrap();
    trip(&mut svc, "a").await;

    assert_eq!(handle.len(), 2);
    assert!(!handle.is_empty());
    assert!(handle.get(&"zzz").is_none(), "no breaker for an unseen key");
    assert_eq!(handle.get(&"a").unwrap().name(), "routes/a");
    let all: Vec<_> = handle
        .snapshot_all()
        .into_iter()
        .map(|s| (s.name, s.state, s.window.calls))
        .collect();
    assert_eq!(
        all,
        [
            ("routes/a".to_owned(), BreakerState::Open, 2),
            ("routes/b".to_owned(), BreakerState::Closed, 0)
        ]
    );
}

#[test]
fn backpressure_mode_is_rejected_naming_the_mode() {
    let config = seed_config().with_mode(BreakerMode::Backpressure);

    let err = KeyedCircuitBreakerLayer::<&str, _>::new("routes", config, 8, key_of).unwrap_err();

    assert_eq!(err.field(), "mode");
}

#[test]
fn zero_max_keys_is_rejected_naming_max_keys() {
    let err =
        KeyedCircuitBreakerLayer::<&str, _>::new("routes", seed_config(), 0, key_of).unwrap_err();

    assert_eq!(err.field(), "max_keys");
    assert_eq!(err.reason(), "must be at least 1");
}

#[test]
fn an_invalid_config_is_rejected_as_the_plain_layer_rejects_it() {
    let config = CircuitBreakerConfig::new(Trip::consecutive_failures(0));
    let expected = config.validate().unwrap_err();

    let err = KeyedCircuitBreakerLayer::<&str, _>::new("routes", config, 8, key_of).unwrap_err();

    assert_eq!(err, expected);
    assert_eq!(err.field(), "trip.consecutive_failures.threshold");
}

/// Compiles only if the keyed breaker and its handle are `Send + Sync + 'static` for every
/// inner service that is.
fn keyed_breaker_is_send_sync_static_when_its_inner_is<S>(_: &S)
where
    S: Service<Req> + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + Sync + 'static,
{
    type KeyFn = fn(&Req) -> &'static str;
    is_send_sync_static::<KeyedCircuitBreaker<S, &'static str, KeyFn>>();
    is_send_sync_static::<<KeyedCircuitBreaker<S, &'static str, KeyFn> as Service<Req>>::Future>();
    is_send_sync_static::<KeyedCircuitBreakerLayer<&'static str, KeyFn, ErrorsAsFailures>>();
    is_send_sync_static::<KeyedBreakerHandle<&'static str>>();
}

#[test]
fn keyed_breaker_is_send_sync_and_static() {
    let inner = service_fn(|req: Req| std::future::ready(Ok::<_, BoxError>(req.0)));
    keyed_breaker_is_send_sync_static_when_its_inner_is(&inner);
}
