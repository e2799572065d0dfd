//! Helpers shared by the breaker's integration tests: a scriptable backend, the seed config,
//! and small accessors for errors and metrics.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use switchyard_breaker::{
    BreakerHandle, BreakerOpen, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, Trip,
};
use switchyard_core::BoxError;
use tower::{Layer, Service, ServiceExt};

/// The message of every error the backend returns from a call.
pub(crate) const BACKEND_FAILED: &str = "backend failed";
/// The message of the error the backend returns from `poll_ready` when told to.
pub(crate) const BACKEND_NOT_READY: &str = "backend not ready";

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The seed example: open after 2 consecutive failures, stay open 100 ms.
pub(crate) fn seed_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::new(Trip::consecutive_failures(2)).with_wait_in_open(ms(100))
}

#[derive(Debug, Default)]
struct Script {
    fail: AtomicBool,
    hang: AtomicBool,
    delay_ms: AtomicU64,
    poll_error: AtomicBool,
    calls: AtomicUsize,
    polls: AtomicUsize,
}

/// A backend whose behaviour for the next calls is set from the test, and which counts how
/// often it was polled for readiness and called. Clones share the script and the counters.
///
/// A call answers `Ok(request)` or `Err("backend failed")`, after an optional tokio-time
/// delay, or never (`hang`). What a call does is fixed when `call` is invoked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backend {
    script: Arc<Script>,
}

impl Backend {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Makes the next calls fail (`true`) or succeed (`false`).
    pub(crate) fn fail(&self, fail: bool) {
        self.script.fail.store(fail, Ordering::SeqCst);
    }

    /// Makes the next calls never complete.
    pub(crate) fn hang(&self, hang: bool) {
        self.script.hang.store(hang, Ordering::SeqCst);
    }

    /// Makes the next calls take `delay` of tokio time.
    pub(crate) fn delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).expect("a test delay fits in u64 ms");
        self.script.delay_ms.store(millis, Ordering::SeqCst);
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
        let fail = self.script.fail.load(Ordering::SeqCst);
        let hang = self.script.hang.load(Ordering::SeqCst);
        let delay = ms(self.script.delay_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if fail {
                Err(BACKEND_FAILED.into())
            } else {
                Ok(req)
            }
        })
    }
}

/// A breaker named "payments" with `config` around a fresh [`Backend`].
pub(crate) fn breaker(
    config: CircuitBreakerConfig,
) -> (CircuitBreaker<Backend>, Backend, BreakerHandle) {
    let layer = CircuitBreakerLayer::new("payments", config).expect("a valid config");
    let backend = Backend::new();
    let handle = layer.handle();
    (layer.layer(backend.clone()), backend, handle)
}

/// Readies `svc` and calls it with `req`.
pub(crate) async fn call<S>(svc: &mut S, req: u32) -> Result<S::Response, BoxError>
where
    S: Service<u32, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// Drives `n` failing calls through `svc`, each of which must reach the backend.
pub(crate) async fn fail_times(svc: &mut CircuitBreaker<Backend>, backend: &Backend, n: usize) {
    backend.fail(true);
    for _ in 0..n {
        let err = call(svc, 0).await.expect_err("the backend fails");
        assert_eq!(
            err.to_string(),
            BACKEND_FAILED,
            "the call reached the backend"
        );
    }
    backend.fail(false);
}

/// The [`BreakerOpen`] inside `err`; panics with the error if it is something else.
pub(crate) fn breaker_open(err: &BoxError) -> &BreakerOpen {
    err.downcast_ref::<BreakerOpen>()
        .unwrap_or_else(|| panic!("expected BreakerOpen, got {err:?}"))
}

/// Whether `result` is a refusal by the breaker.
pub(crate) fn is_refused<T>(result: &Result<T, BoxError>) -> bool {
    matches!(result, Err(e) if e.is::<BreakerOpen>())
}

/// Polls `future` once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(std::task::Waker::noop()))
}
