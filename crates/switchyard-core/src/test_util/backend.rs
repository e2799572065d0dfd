//! A scriptable backend service and the small helpers every crate's tests use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{BoxError, Service};

/// The message of every error the [`Backend`] returns from a call.
pub const BACKEND_FAILED: &str = "backend failed";

/// The message of the error the [`Backend`]'s `poll_ready` returns when told to fail.
pub const BACKEND_NOT_READY: &str = "backend not ready";

/// `n` milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `future` once with a waker that does nothing.
pub fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// Compiles only for a type that is `Send + Sync + 'static`: the contract test for services,
/// layers and handles (`is_send_sync_static::<MyService<Backend>>()`).
pub fn is_send_sync_static<T: Send + Sync + 'static>() {}

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
/// A call answers `Ok(request)` or `Err(`[`BACKEND_FAILED`]`)`, after an optional
/// tokio-time delay, or never (`hang`). What a call does is fixed when `call` is invoked.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    script: Arc<Script>,
}

impl Backend {
    /// A backend that answers every call at once with its request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next calls fail (`true`) or succeed (`false`).
    pub fn fail(&self, fail: bool) {
        self.script.fail.store(fail, Ordering::SeqCst);
    }

    /// Makes the next calls never complete.
    pub fn hang(&self, hang: bool) {
        self.script.hang.store(hang, Ordering::SeqCst);
    }

    /// Makes the next calls take `delay` of tokio time.
    ///
    /// # Panics
    ///
    /// If `delay` is longer than `u64::MAX` milliseconds.
    pub fn delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).expect("a test delay fits in u64 ms");
        self.script.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Makes `poll_ready` answer an error (`true`) or `Ready(Ok)` (`false`).
    pub fn fail_poll_ready(&self, fail: bool) {
        self.script.poll_error.store(fail, Ordering::SeqCst);
    }

    /// How many calls reached the backend.
    pub fn calls(&self) -> usize {
        self.script.calls.load(Ordering::SeqCst)
    }

    /// How often the backend's `poll_ready` was polled.
    pub fn polls(&self) -> usize {
        self.script.polls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

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
