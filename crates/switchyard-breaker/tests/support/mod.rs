//! Helpers shared by the breaker's integration tests: the example config and small accessors
//! (the scriptable backend is core's), for errors and metrics.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use switchyard_breaker::{
    BreakerHandle, BreakerOpen, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, Trip,
};
use switchyard_core::BoxError;
use tower::{Layer, Service, ServiceExt};

pub(crate) use switchyard_core::test_util::{
    BACKEND_FAILED, BACKEND_NOT_READY, Backend, is_send_sync_static, ms, poll_once,
};

/// The documented example: open after 2 consecutive failures, stay open 100 ms.
pub(crate) fn seed_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::new(Trip::consecutive_failures(2)).with_wait_in_open(ms(100))
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
