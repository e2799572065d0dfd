//! The shared limiters: governor's GCRA on tokio's clock, with the metrics beside them.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use metrics::Counter;

use crate::clock::{TokioClock, TokioInstant};
use crate::config::{RateLimitConfig, RateLimitMode};
use crate::error::RateLimited;

type Direct =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;
pub(crate) type Keyed<K> =
    governor::RateLimiter<K, DashMapStateStore<K>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// Handles registered once per limit, so the call path never builds a metric key.
pub(crate) struct Metrics {
    pub(crate) admitted: Counter,
    pub(crate) rejected: Counter,
}

impl Metrics {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        Self {
            admitted: metrics::counter!("switchyard_ratelimit_admitted_total", "limit" => name.to_string()),
            rejected: metrics::counter!("switchyard_ratelimit_rejected_total", "limit" => name.to_string()),
        }
    }

    /// Counts a refusal as it reaches its caller, and hands it on.
    pub(crate) fn reject(&self, refusal: RateLimited) -> RateLimited {
        self.rejected.increment(1);
        tracing::debug!(
            target: "switchyard_ratelimit",
            limit = %refusal.name(),
            retry_after_ms = u64::try_from(refusal.retry_after().as_millis()).unwrap_or(u64::MAX),
            "rate limit refused a call"
        );
        refusal
    }
}

/// One limit shared by every clone of the services of one layer.
pub(crate) struct Limiter {
    pub(crate) name: Arc<str>,
    pub(crate) mode: RateLimitMode,
    pub(crate) metrics: Metrics,
    limiter: Direct,
}

impl Limiter {
    /// `config` must have been validated.
    pub(crate) fn new(name: Arc<str>, config: &RateLimitConfig) -> Self {
        Self {
            metrics: Metrics::new(&name),
            mode: config.mode,
            limiter: governor::RateLimiter::direct_with_clock(config.quota(), TokioClock),
            name,
        }
    }

    /// Takes one call's worth of the limit now, or says how long until it could.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }
}

/// A limit per key, shared by every clone of the services of one keyed layer.
pub(crate) struct KeyedLimiter<K: Hash + Eq + Clone> {
    pub(crate) name: Arc<str>,
    pub(crate) mode: RateLimitMode,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Keyed<K>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `config` must have been validated.
    pub(crate) fn new(name: Arc<str>, config: &RateLimitConfig) -> Self {
        Self {
            metrics: Metrics::new(&name),
            mode: config.mode,
            limiter: governor::RateLimiter::dashmap_with_clock(config.quota(), TokioClock),
            name,
        }
    }

    /// Takes one call's worth of `key`'s limit now, or says how long until it could.
    #[inline]
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }
}
