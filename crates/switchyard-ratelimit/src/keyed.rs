//! A rate limit per key: per client, per API key, per route.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use switchyard_core::{BoxError, ConfigError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::config::{RateLimitConfig, RateLimitMode};
use crate::error::RateLimited;
use crate::future::KeyedResponseFuture;
use crate::limiter::KeyedLimiter;

/// Wraps services in a rate limit per key, the key taken from each request by a function (see
/// [`key`](crate::key) for ready ones). Every key gets the same quota; clones share every key's
/// state.
///
/// The key is known only in `call`, after the inner service was readied. In wait mode a call
/// over its key's limit therefore waits in its response future with a clone of the inner
/// service, which it readies and calls once admitted; so the keyed service needs `S: Clone`
/// (wrap a service that is not in `tower::buffer::Buffer`).
///
/// A key whose bucket has refilled holds no information (a fresh key starts with a full
/// burst), so [`spawn_cleanup`](KeyedRateLimitLayer::spawn_cleanup) forgets such keys
/// periodically. Memory is then bounded by the keys seen within one cleanup interval plus the
/// time a bucket takes to refill (`burst` intervals). Without cleanup it grows with every key
/// seen: run it when keys come from clients (a header, a path, an address).
///
/// A refusal's error names the limit, not the key, since the key may be a credential.
pub struct KeyedRateLimitLayer<K: Hash + Eq + Clone, F> {
    limits: Arc<KeyedLimiter<K>>,
    key_fn: F,
}

impl<K, F> KeyedRateLimitLayer<K, F>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A limit per `key_fn(&request)`, named `name` in errors and metrics.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new<Req>(
        name: impl Into<Arc<str>>,
        config: &RateLimitConfig,
        key_fn: F,
    ) -> Result<Self, ConfigError>
    where
        F: Fn(&Req) -> K,
    {
        config.validate()?;
        switchyard_core::rejection::register::<RateLimited>();
        Ok(Self {
            limits: Arc::new(KeyedLimiter::new(name.into(), config)),
            key_fn,
        })
    }

    /// How many keys have state now (an estimate under concurrent use).
    pub fn len(&self) -> usize {
        self.limits.limiter.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets now every key whose state is indistinguishable from a fresh one.
    pub fn cleanup(&self) {
        self.limits.limiter.retain_recent();
        self.limits.limiter.shrink_to_fit();
    }

    /// Runs [`cleanup`](Self::cleanup) every `interval` (from 1 ms to a year) on the tokio
    /// runtime, until the
    /// returned task is aborted or every layer and service sharing these limits is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn_cleanup(&self, interval: Duration) -> JoinHandle<()> {
        let limits = Arc::downgrade(&self.limits);
        let interval = interval.clamp(Duration::from_millis(1), Duration::from_secs(86_400 * 365));
        // The schedule starts now, not when the task is first polled.
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        tokio::spawn(async move {
            loop {
                ticks.tick().await;
                let Some(limits) = limits.upgrade() else {
                    break;
                };
                limits.limiter.retain_recent();
                limits.limiter.shrink_to_fit();
                metrics::gauge!("switchyard_ratelimit_keys", "limit" => limits.name.to_string())
                    .set(f64::from(
                        u32::try_from(limits.limiter.len()).unwrap_or(u32::MAX),
                    ));
            }
        })
    }
}

impl<K: Hash + Eq + Clone, F: Clone> Clone for KeyedRateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            limits: Arc::clone(&self.limits),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, F> fmt::Debug for KeyedRateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limit", &self.limits.name)
            .finish_non_exhaustive()
    }
}

impl<S, K: Hash + Eq + Clone, F: Clone> Layer<S> for KeyedRateLimitLayer<K, F> {
    type Service = KeyedRateLimit<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            limits: Arc::clone(&self.limits),
            key_fn: self.key_fn.clone(),
        }
    }
}

/// A service with a rate limit per key. Built by [`KeyedRateLimitLayer`].
pub struct KeyedRateLimit<S, K: Hash + Eq + Clone, F> {
    inner: S,
    limits: Arc<KeyedLimiter<K>>,
    key_fn: F,
}

impl<S: Clone, K: Hash + Eq + Clone, F: Clone> Clone for KeyedRateLimit<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: Arc::clone(&self.limits),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<S: fmt::Debug, K: Hash + Eq + Clone, F> fmt::Debug for KeyedRateLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limit", &self.limits.name)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedRateLimit<S, K, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = KeyedResponseFuture<S::Future, S, Req, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key_fn)(&req);
        let limits = &*self.limits;
        let wait = match limits.check(&key) {
            Ok(()) => {
                limits.metrics.admitted.increment(1);
                return KeyedResponseFuture::called(self.inner.call(req));
            }
            Err(wait) => wait,
        };
        if let RateLimitMode::Wait { max_wait } = limits.mode
            && wait <= max_wait
            && let Some(until) = Instant::now().checked_add(wait)
        {
            // The waiting call takes a clone, readied only once the limit admits it: holding
            // the readied service while waiting would hold what its readiness reserved (a
            // `Buffer` slot, a concurrency permit) from every other key. This one stays readied
            // for the next call.
            let service = self.inner.clone();
            let deadline = Instant::now().checked_add(max_wait);
            return KeyedResponseFuture::waiting(
                until,
                deadline,
                key,
                Arc::clone(&self.limits),
                service,
                req,
            );
        }
        // The key stays out of the error: it may be a credential (an API key header), and
        // the error's text reaches response bodies and logs.
        KeyedResponseFuture::refused(
            limits
                .metrics
                .reject(RateLimited::new(Arc::clone(&limits.name), wait)),
        )
    }
}
