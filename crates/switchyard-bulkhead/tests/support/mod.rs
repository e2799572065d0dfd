//! Helpers shared by the bulkhead's integration tests: a counting backend, bulkheads and
//! controllers built from a slot count and a policy, and small accessors for errors, futures
//! and metrics.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use switchyard_bulkhead::{
    AdmissionController, Bulkhead, BulkheadConfig, BulkheadFull, BulkheadLayer, FullReason, Policy,
};
use switchyard_core::BoxError;
use tower::{Layer, Service, ServiceExt};

/// The name every test bulkhead goes by.
pub(crate) const NAME: &str = "ledger";
/// The message of the error the backend returns from `poll_ready` when told to.
pub(crate) const BACKEND_NOT_READY: &str = "backend not ready";

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The queue policy with `capacity` waiters and a wait of `max_wait_ms`.
pub(crate) fn queue(capacity: u32, max_wait_ms: u64) -> Policy {
    Policy::Queue {
        capacity,
        max_wait: ms(max_wait_ms),
    }
}

#[derive(Debug, Default)]
struct Script {
    hang: AtomicBool,
    poll_error: AtomicBool,
    calls: AtomicUsize,
    polls: AtomicUsize,
}

/// A backend whose behaviour for the next calls is set from the test, and which counts how
/// often it was polled for readiness and called. Clones share the script and the counters.
///
/// A call answers `Ok(request)` at once, or never (`hang`); what a call does is fixed when
/// `call` is invoked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backend {
    script: Arc<Script>,
}

impl Backend {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Makes the next calls never complete.
    pub(crate) fn hang(&self, hang: bool) {
        self.script.hang.store(hang, Ordering::SeqCst);
    }

    /// Makes `poll_ready` answer an error (`true`) or `Ready(Ok)` (`false`).
    pub(crate) fn fail_poll_ready(&self, fail: bool) {
        self.script.poll_error.store(fail, Ordering::SeqCst);
    }

    /// How many calls reached the backend.
    pub(crate) fn calls(&self) -> usize {
        self.script.calls.load(Ordering::SeqCst)
    }

    /// How often the backend's `poll_ready` was polled.
    pub(crate) fn polls(&self) -> usize {
        self.script.polls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u32;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<u32, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.script.polls.fetch_add(1, Ordering::SeqCst);
        if self.script.poll_error.load(Ordering::SeqCst) {
            Poll::Ready(Err(BACKEND_NOT_READY.into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.script.calls.fetch_add(1, Ordering::SeqCst);
        let hang = self.script.hang.load(Ordering::SeqCst);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(req)
        })
    }
}

/// A controller named [`NAME`] with `max_concurrent_calls` slots under `policy`.
pub(crate) fn controller(max_concurrent_calls: u32, policy: Policy) -> AdmissionController {
    AdmissionController::new(NAME, &BulkheadConfig::new(max_concurrent_calls, policy))
        .expect("a valid config")
}

/// A bulkhead named [`NAME`] around a fresh [`Backend`], with its controller.
pub(crate) fn bulkhead(
    max_concurrent_calls: u32,
    policy: Policy,
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

/// Polls `future` once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
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
