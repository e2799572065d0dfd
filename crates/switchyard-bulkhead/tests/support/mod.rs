//! Helpers shared by the bulkhead's integration tests: bulkheads and
//! controllers built from a slot count and a policy, and small accessors for errors and metrics
//! (the scriptable backend is core's).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use switchyard_bulkhead::{
    AdmissionController, Bulkhead, BulkheadConfig, BulkheadFull, BulkheadLayer, BulkheadPolicy,
    FullReason,
};
use switchyard_core::BoxError;
use tower::{Layer, Service, ServiceExt};

/// The name every test bulkhead goes by.
pub(crate) const NAME: &str = "ledger";
pub(crate) use switchyard_core::test_util::{
    BACKEND_NOT_READY, Backend, is_send_sync_static, ms, poll_once,
};

/// The queue policy with `capacity` waiters and a wait of `max_wait_ms`.
pub(crate) fn queue(capacity: u32, max_wait_ms: u64) -> BulkheadPolicy {
    BulkheadPolicy::Queue {
        capacity,
        max_wait: ms(max_wait_ms),
    }
}

/// A controller named [`NAME`] with `max_concurrent_calls` slots under `policy`.
pub(crate) fn controller(max_concurrent_calls: u32, policy: BulkheadPolicy) -> AdmissionController {
    AdmissionController::new(NAME, &BulkheadConfig::new(max_concurrent_calls, policy))
        .expect("a valid config")
}

/// A bulkhead named [`NAME`] around a fresh [`Backend`], with its controller.
pub(crate) fn bulkhead(
    max_concurrent_calls: u32,
    policy: BulkheadPolicy,
) -> (Bulkhead<Backend>, Backend, AdmissionController) {
    let layer = BulkheadLayer::new(NAME, &BulkheadConfig::new(max_concurrent_calls, policy))
        .expect("a valid config");
    let backend = Backend::new();
    let controller = layer.controller().clone();
    (layer.layer(backend.clone()), backend, controller)
}

/// Readies `svc` and calls it with `req`.
pub(crate) async fn call<S>(svc: &mut S, req: u32) -> Result<S::Response, BoxError>
where
    S: Service<u32, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// The [`BulkheadFull`] inside `err`; panics with the error if it is something else.
pub(crate) fn bulkhead_full(err: &BoxError) -> &BulkheadFull {
    err.downcast_ref::<BulkheadFull>()
        .unwrap_or_else(|| panic!("expected BulkheadFull, got {err:?}"))
}

/// Why `result` was refused; panics if it was not refused by the bulkhead.
pub(crate) fn refusal<T: std::fmt::Debug>(result: &Result<T, BoxError>) -> FullReason {
    match result {
        Err(err) => bulkhead_full(err).reason(),
        Ok(value) => panic!("expected a refusal, got Ok({value:?})"),
    }
}

/// A current-thread runtime with tokio time paused, for tests that cannot be `#[tokio::test]`
/// (a metrics recorder installed around the runtime, a proptest case).
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// A metrics recorder that stages interleavings: it runs a hook each time a counter of one
/// name is incremented, on the thread and at the point where the library records it.
pub(crate) mod hooked {
    use std::sync::Arc;

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    type Hook = Arc<dyn Fn() + Send + Sync>;

    /// Runs `hook` on every increment of a counter named `name`; every other metric is a no-op.
    pub(crate) struct CounterHook {
        name: &'static str,
        hook: Hook,
    }

    impl CounterHook {
        pub(crate) fn new(name: &'static str, hook: impl Fn() + Send + Sync + 'static) -> Self {
            Self {
                name,
                hook: Arc::new(hook),
            }
        }
    }

    struct OnIncrement(Hook);

    impl CounterFn for OnIncrement {
        fn increment(&self, _value: u64) {
            (self.0)();
        }

        fn absolute(&self, _value: u64) {}
    }

    impl Recorder for CounterHook {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            if key.name() == self.name {
                Counter::from_arc(Arc::new(OnIncrement(Arc::clone(&self.hook))))
            } else {
                Counter::noop()
            }
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}
