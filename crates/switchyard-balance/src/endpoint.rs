//! Endpoints: their settings, live counters and health, and the serialisable stats snapshot.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;
use switchyard_core::sync::lock;

use crate::outlier::OutlierState;
use crate::selector::DECAY;

/// How an endpoint is doing, as its health checks (or an operator) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked yet, or cannot be told. Eligible.
    #[default]
    Unknown,
    /// Working. Eligible.
    Healthy,
    /// Working, with its performance impaired. Eligible.
    Degraded,
    /// Failing. Not picked.
    Unhealthy,
    /// Must not receive calls. Not picked.
    Offline,
}

impl Health {
    const ALL: [Self; 5] = [
        Self::Unknown,
        Self::Healthy,
        Self::Degraded,
        Self::Unhealthy,
        Self::Offline,
    ];

    /// Whether an endpoint in this state may be picked.
    pub const fn is_eligible(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy | Self::Degraded)
    }

    /// A stable snake_case name, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Offline => "offline",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL.get(usize::from(v)).copied().unwrap_or_default()
    }
}

/// An endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Relative share of traffic for `weighted-random` and virtual nodes for
    /// `consistent-hash`, at least 1 (to drain an endpoint, disable it).
    #[serde(default = "one")]
    pub weight: u32,
    /// The `priority` strategy's tier: the highest number with an eligible endpoint wins.
    #[serde(default)]
    pub priority: i32,
    /// A disabled endpoint is never picked; in-flight calls finish.
    #[serde(default = "yes")]
    pub enabled: bool,
}

const fn one() -> u32 {
    1
}

const fn yes() -> bool {
    true
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            weight: 1,
            priority: 0,
            enabled: true,
        }
    }
}

impl EndpointConfig {
    /// The same settings with `weight`.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The same settings with `priority`.
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work, as it sits in a
    /// balancer's config (`endpoint.weight`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.weight == 0 {
            return Err(ConfigError::new(
                "endpoint.weight",
                "must be at least 1 (to drain an endpoint, disable it)",
            ));
        }
        Ok(())
    }
}

/// One endpoint's identity and live counters, shared by the balancer, its selectors and its
/// response futures. Selectors read it through [`EndpointView`]'s accessors.
#[derive(Debug)]
pub struct EndpointView {
    name: Arc<str>,
    weight: u32,
    priority: i32,
    pub(crate) enabled: AtomicBool,
    health: AtomicU8,
    pub(crate) in_flight: AtomicU32,
    pub(crate) total: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Peak-EWMA latency in nanoseconds (0: never measured).
    pub(crate) ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since the balancer's epoch.
    pub(crate) ewma_at: AtomicU64,
    /// When the endpoint was last picked, in nanoseconds since the balancer's epoch (0: never).
    pub(crate) last_used: AtomicU64,
    /// Outlier detection's state. A lock, not atomics: an outcome moves several of its counts
    /// together. It is taken only with outlier detection configured, by a failure, or by a
    /// success that has something to change (see `streak_open`), and held for a few plain
    /// operations; the pick never takes it (the snapshot already leaves ejected endpoints
    /// out), only rebuilding the snapshot and stats do.
    pub(crate) outlier: Mutex<OutlierState>,
    /// Whether `outlier` has a failure streak open, written under its lock. Without a
    /// failure-rate window, a success changes the state only by ending a streak, so a success
    /// that finds none open skips the lock: most calls succeed, and the lock on every one of
    /// them measured about 30 ns a call (12%) in the balancer's bench, where the atomics this
    /// state replaced cost nothing extra.
    pub(crate) streak_open: AtomicBool,
    /// Set when the endpoint leaves its balancer (its health checker then stops).
    pub(crate) removed: AtomicBool,
    /// Set while its service is not ready (its `poll_ready` answered `Pending`): not picked
    /// while another eligible endpoint is ready.
    pub(crate) pending: AtomicBool,
    /// Set while a background task drives its readiness.
    pub(crate) probing: AtomicBool,
    /// Wakes that task, and calls waiting for the endpoint to be ready, when the endpoint is
    /// removed or its service replaced.
    pub(crate) gone: Arc<tokio::sync::Notify>,
    /// Counts replacements of its service (by discovery), so a call can tell it waits on an
    /// old one.
    pub(crate) generation: AtomicU32,
    /// Set while an operator holds it `Offline` (`Balance::set_health`): checks do not
    /// change its health.
    pub(crate) held_offline: AtomicBool,
}

impl EndpointView {
    /// A view detached from any balancer, for testing or benchmarking a [`Selector`] of your
    /// own: no calls, `Unknown` health.
    ///
    /// [`Selector`]: crate::Selector
    pub fn new(name: impl Into<Arc<str>>, config: &EndpointConfig) -> Self {
        Self {
            name: name.into(),
            // Not validated here (this constructor answers no error): selectors divide by
            // weights, so a 0 from an unchecked config is taken as 1.
            weight: config.weight.max(1),
            priority: config.priority,
            enabled: AtomicBool::new(config.enabled),
            health: AtomicU8::new(Health::Unknown as u8),
            in_flight: AtomicU32::new(0),
            total: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            outlier: Mutex::default(),
            streak_open: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            gone: Arc::new(tokio::sync::Notify::new()),
            generation: AtomicU32::new(0),
            held_offline: AtomicBool::new(false),
        }
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Its priority tier.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate, or `None` before the first response.
    pub fn latency(&self) -> Option<Duration> {
        match self.ewma_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Its health as last set (by a checker or by hand).
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub(crate) fn set_health(&self, health: Health) -> Health {
        Health::from_u8(self.health.swap(health as u8, Ordering::AcqRel))
    }

    /// Whether its service was ready when last polled. An endpoint seen not ready is driven
    /// to readiness in the background and not picked meanwhile, unless no eligible endpoint is
    /// ready.
    pub fn ready(&self) -> bool {
        !self.pending.load(Ordering::Acquire)
    }

    /// Whether it is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether it is ejected at `now` (nanoseconds since the balancer's epoch).
    pub(crate) fn ejected_at(&self, now: u64) -> bool {
        lock(&self.outlier).is_ejected(now)
    }

    /// Counts a call sent to it at `now`.
    pub(crate) fn start_call(&self, now: u64) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.last_used.store(now, Ordering::Relaxed);
    }

    /// Folds one round-trip time, measured at `now`, into the peak EWMA: a slower sample
    /// replaces the estimate at once (the peak), a faster one pulls it down with a weight that
    /// decays with the time since the last sample.
    pub(crate) fn record_latency(&self, rtt: Duration, now: u64) {
        let rtt = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        let previous = self.ewma_ns.load(Ordering::Relaxed);
        let since = now.saturating_sub(self.ewma_at.swap(now, Ordering::Relaxed));
        let next = if previous == 0 || rtt > previous {
            rtt
        } else {
            let keep = (-(since as f64) / DECAY.as_nanos() as f64).exp();
            (previous as f64 * keep + rtt as f64 * (1.0 - keep)) as u64
        };
        self.ewma_ns.store(next.max(1), Ordering::Relaxed);
    }

    pub(crate) fn stats(&self, now: u64) -> EndpointStats {
        let total = self.total.load(Ordering::Relaxed);
        let successes = self.successes.load(Ordering::Relaxed);
        let last_used = self.last_used.load(Ordering::Relaxed);
        EndpointStats {
            name: self.name.to_string(),
            weight: self.weight,
            priority: self.priority,
            enabled: self.enabled(),
            health: self.health(),
            ejected: self.ejected_at(now),
            ready: self.ready(),
            in_flight: self.in_flight(),
            total_requests: total,
            successful_requests: successes,
            failed_requests: self.failures.load(Ordering::Relaxed),
            success_rate: {
                let judged = successes + self.failures.load(Ordering::Relaxed);
                if judged == 0 {
                    0.0
                } else {
                    successes as f64 * 100.0 / judged as f64
                }
            },
            latency: self.latency(),
            last_used_ago: (last_used > 0)
                .then(|| Duration::from_nanos(now.saturating_sub(last_used))),
        }
    }
}

/// A serialisable snapshot of one endpoint's settings, state and counters
/// ([`Balance::stats`](crate::Balance::stats)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Its priority tier.
    pub priority: i32,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Its health.
    pub health: Health,
    /// Whether outlier detection has ejected it for now.
    pub ejected: bool,
    /// Whether its service was ready when last polled ([`EndpointView::ready`]).
    pub ready: bool,
    /// Calls in flight.
    pub in_flight: u32,
    /// Calls sent to it.
    pub total_requests: u64,
    /// Calls classified as successes.
    pub successful_requests: u64,
    /// Calls classified as failures.
    pub failed_requests: u64,
    /// Successes over classified calls (successes + failures), in percent (0 with none).
    pub success_rate: f64,
    /// The peak-EWMA latency estimate.
    #[serde(with = "switchyard_core::duration")]
    pub latency: Option<Duration>,
    /// How long ago it was last picked.
    #[serde(with = "switchyard_core::duration")]
    pub last_used_ago: Option<Duration>,
}
