//! A bulkhead per key: isolation between keys, the bound on keys, and what cannot be keyed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use switchyard_bulkhead::{
    BulkheadConfig, BulkheadFull, BulkheadPolicy, FullReason, KeyedBulkheadLayer,
};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

type Call = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

/// A request: its key, and a signal that ends the call.
type Req = (&'static str, tokio::sync::oneshot::Receiver<()>);

/// A service whose calls for `(key, hold)` stay in flight until `hold` resolves.
fn keyed(
    max_keys: usize,
) -> (
    impl Service<Req, Response = &'static str, Error = BoxError> + Clone,
    switchyard_bulkhead::KeyedBulkheadHandle<&'static str>,
) {
    let layer = KeyedBulkheadLayer::new(
        "tenants",
        BulkheadConfig::new(1, BulkheadPolicy::HardReject),
        max_keys,
        |req: &Req| req.0,
    )
    .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|(key, hold): Req| -> Call {
        Box::pin(async move {
            let _ = hold.await;
            Ok(key)
        })
    }));
    (svc, handle)
}

fn refusal(err: &BoxError) -> &BulkheadFull {
    err.downcast_ref::<BulkheadFull>().expect("a BulkheadFull")
}

#[tokio::test]
async fn a_busy_key_does_not_take_the_slots_of_another() {
    let (mut svc, handle) = keyed(8);
    let (release_a, hold_a) = tokio::sync::oneshot::channel();
    let a = svc.ready().await.unwrap().call(("a", hold_a));

    let (_, hold) = tokio::sync::oneshot::channel();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("a", hold))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "bulkhead full: tenants/a");
    assert_eq!(refusal(&err).reason(), FullReason::Full);

    let (release_b, hold_b) = tokio::sync::oneshot::channel();
    release_b.send(()).unwrap();
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(("b", hold_b))
            .await
            .unwrap(),
        "b"
    );

    release_a.send(()).unwrap();
    assert_eq!(a.await.unwrap(), "a");
    assert_eq!(handle.get(&"a").unwrap().stats().rejected, 1);
    assert_eq!(handle.get(&"b").unwrap().stats().rejected, 0);
}

#[tokio::test]
async fn a_new_key_beyond_max_keys_evicts_the_least_recently_used_idle_bulkhead() {
    let (mut svc, handle) = keyed(2);
    for key in ["a", "b", "a"] {
        let (release, hold) = tokio::sync::oneshot::channel();
        release.send(()).unwrap();
        svc.ready().await.unwrap().call((key, hold)).await.unwrap();
    }
    let (release, hold) = tokio::sync::oneshot::channel();
    release.send(()).unwrap();
    svc.ready().await.unwrap().call(("c", hold)).await.unwrap();

    assert_eq!(handle.len(), 2);
    assert!(handle.get(&"b").is_none(), "b was the least recently used");
    let names: Vec<_> = handle.stats_all().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["tenants/a", "tenants/c"]);
}

#[tokio::test]
async fn a_new_key_is_refused_when_every_kept_bulkhead_is_busy() {
    let (mut svc, handle) = keyed(1);
    let (release_a, hold_a) = tokio::sync::oneshot::channel();
    let a = svc.ready().await.unwrap().call(("a", hold_a));

    let (_, hold) = tokio::sync::oneshot::channel();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("b", hold))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "bulkhead full: tenants/b");
    assert!(
        handle.get(&"a").is_some(),
        "the busy bulkhead kept its isolation"
    );

    release_a.send(()).unwrap();
    a.await.unwrap();
    let (release, hold) = tokio::sync::oneshot::channel();
    release.send(()).unwrap();
    assert_eq!(
        svc.ready().await.unwrap().call(("b", hold)).await.unwrap(),
        "b"
    );
}

#[test]
fn a_queue_policy_cannot_be_keyed() {
    let queue = BulkheadPolicy::Queue {
        capacity: 4,
        max_wait: Duration::from_millis(10),
    };
    let err =
        KeyedBulkheadLayer::new("k", BulkheadConfig::new(1, queue), 8, |r: &u32| *r).unwrap_err();
    assert_eq!(err.field(), "policy");
}

#[test]
fn zero_max_keys_is_rejected() {
    let err = KeyedBulkheadLayer::new("k", BulkheadConfig::default(), 0, |r: &u32| *r).unwrap_err();
    assert_eq!(err.field(), "max_keys");
    let bad = BulkheadConfig::new(0, BulkheadPolicy::HardReject);
    let err = KeyedBulkheadLayer::new("k", bad, 8, |r: &u32| *r).unwrap_err();
    assert_eq!(err.field(), "max_concurrent_calls");
}

#[tokio::test]
async fn a_bulkhead_someone_still_holds_is_not_evicted() {
    let (mut svc, handle) = keyed(2);
    for key in ["b", "a"] {
        let (release, hold) = tokio::sync::oneshot::channel();
        release.send(()).unwrap();
        svc.ready().await.unwrap().call((key, hold)).await.unwrap();
    }
    // "b" is the least recently used, but a caller still holds its controller (as one does
    // between its lookup and taking a slot): evicting it would split "b" into two bulkheads.
    let held = handle.get(&"b").expect("b has a bulkhead");
    let (release, hold) = tokio::sync::oneshot::channel();
    release.send(()).unwrap();
    svc.ready().await.unwrap().call(("c", hold)).await.unwrap();

    assert!(handle.get(&"a").is_none(), "the unheld one went instead");
    assert_eq!(held.name(), "tenants/b");
    assert!(handle.get(&"b").is_some());
}
