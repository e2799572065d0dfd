//! The bulkhead's config: plain serde data, validated with errors that name the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;

/// How many calls a bulkhead lets run at once, and what it does with the next one.
///
/// ```
/// use std::time::Duration;
/// use switchyard_bulkhead::{BulkheadConfig, BulkheadPolicy};
///
/// let config: BulkheadConfig = serde_json::from_str(r#"{
///     "max_concurrent_calls": 10,
///     "policy": { "queue": { "capacity": 50, "max_wait": "250ms" } }
/// }"#).unwrap();
/// config.validate().unwrap();
/// let max_wait = Duration::from_millis(250);
/// assert_eq!(config.policy, BulkheadPolicy::Queue { capacity: 50, max_wait });
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed in flight at once (the policy decides what happens beyond).
    pub max_concurrent_calls: u32,
    /// What happens to a call when all slots are taken.
    pub policy: BulkheadPolicy,
    /// If set, the slot count moves between bounds with the backend's health (AIMD), starting
    /// at `max_concurrent_calls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveConfig>,
}

impl Default for BulkheadConfig {
    /// 25 concurrent calls (Resilience4j's default), hard reject beyond.
    fn default() -> Self {
        Self {
            max_concurrent_calls: 25,
            policy: BulkheadPolicy::HardReject,
            adaptive: None,
        }
    }
}

impl BulkheadConfig {
    /// `max_concurrent_calls` slots with `policy`.
    pub fn new(max_concurrent_calls: u32, policy: BulkheadPolicy) -> Self {
        Self {
            max_concurrent_calls,
            policy,
            adaptive: None,
        }
    }

    /// Lets the slot count adapt, as `adaptive` describes.
    #[must_use]
    pub fn with_adaptive(mut self, adaptive: AdaptiveConfig) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_calls == 0 {
            return Err(ConfigError::new(
                "max_concurrent_calls",
                "must be at least 1",
            ));
        }
        if self.max_concurrent_calls > MAX_CONCURRENT_CALLS {
            return Err(ConfigError::new(
                "max_concurrent_calls",
                format!("must be at most {MAX_CONCURRENT_CALLS}"),
            ));
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive
                .validate(self.max_concurrent_calls)
                .map_err(|e| e.within("adaptive"))?;
        }
        if let BulkheadPolicy::Queue { capacity, max_wait } = self.policy {
            if capacity == 0 {
                return Err(ConfigError::new(
                    "policy.queue.capacity",
                    "must be at least 1 (use `hard_reject` for no queue)",
                ));
            }
            if max_wait.is_zero() {
                return Err(ConfigError::new(
                    "policy.queue.max_wait",
                    "must be greater than zero (use `hard_reject` for no wait)",
                ));
            }
        }
        Ok(())
    }
}

/// The most slots a bulkhead may have (tokio's semaphore limit is far above; this keeps the
/// counters in 32 bits).
pub const MAX_CONCURRENT_CALLS: u32 = 1 << 24;

/// A queue's `max_wait` meaning "no deadline": a caller waits until a slot frees, and no timer
/// is armed for the wait (for programs that build a [`BulkheadPolicy::Queue`] themselves; a config
/// file gives a duration).
pub const NO_DEADLINE: Duration = Duration::MAX;

/// What a full bulkhead does with the next call: one of four policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BulkheadPolicy {
    /// Refuse at once with [`BulkheadFull`](crate::BulkheadFull). An atomic counter, no queue.
    #[default]
    HardReject,
    /// Wait in a fair (FIFO) queue of at most `capacity` callers for at most `max_wait`,
    /// then refuse. Written `{"queue": {"capacity": 100, "max_wait": "1s"}}`.
    Queue {
        /// Callers that may wait at once; the next one is refused at once.
        capacity: u32,
        /// How long a caller waits for a slot before it is refused.
        #[serde(with = "switchyard_core::duration")]
        max_wait: Duration,
    },
    /// Admit beyond the limit, and count it: for measuring what a limit would do before
    /// enforcing it.
    SoftAllow,
    /// Admit beyond the limit, count it, and signal the pressure (a `watch` channel, a tracing
    /// event, the permit's [`is_over_capacity`](crate::Permit::is_over_capacity)) so a caller
    /// upstream can slow down.
    SoftAllowWithSignal,
}

impl BulkheadPolicy {
    /// A stable snake_case name, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HardReject => "hard_reject",
            Self::Queue { .. } => "queue",
            Self::SoftAllow => "soft_allow",
            Self::SoftAllowWithSignal => "soft_allow_with_signal",
        }
    }
}

/// An adaptive slot count: additive increase, multiplicative decrease (AIMD), the congestion
/// control of TCP applied to concurrency, as Netflix's `concurrency-limits` does.
///
/// Every call that ends in an error or takes longer than `latency_threshold` is a congestion
/// signal and multiplies the limit by `decrease_factor` (down to `min_limit`). Every call that
/// succeeds in time while at least half the slots are busy adds `increase_by` (up to
/// `max_limit`): a bulkhead that is not used does not grow. The count starts at
/// `max_concurrent_calls`.
///
/// ```
/// use std::time::Duration;
/// use switchyard_bulkhead::{AdaptiveConfig, BulkheadConfig, BulkheadPolicy};
///
/// let config: BulkheadConfig = serde_json::from_str(r#"{
///     "max_concurrent_calls": 20,
///     "adaptive": { "min_limit": 2, "max_limit": 100, "latency_threshold": "250ms" }
/// }"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.adaptive.unwrap().decrease_factor, 0.9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// The fewest slots the limit falls to.
    pub min_limit: u32,
    /// The most slots the limit grows to.
    pub max_limit: u32,
    /// A call slower than this is a congestion signal.
    #[serde(with = "switchyard_core::duration")]
    pub latency_threshold: Duration,
    /// The factor in (0, 1) a congestion signal multiplies the limit by.
    #[serde(default = "AdaptiveConfig::default_decrease_factor")]
    pub decrease_factor: f64,
    /// Slots added per timely success while at least half the slots are busy.
    #[serde(default = "AdaptiveConfig::default_increase_by")]
    pub increase_by: u32,
}

impl AdaptiveConfig {
    fn default_decrease_factor() -> f64 {
        0.9
    }

    fn default_increase_by() -> u32 {
        1
    }

    /// Bounds and threshold, with the default factor (0.9) and step (1).
    pub fn new(min_limit: u32, max_limit: u32, latency_threshold: Duration) -> Self {
        Self {
            min_limit,
            max_limit,
            latency_threshold,
            decrease_factor: Self::default_decrease_factor(),
            increase_by: Self::default_increase_by(),
        }
    }

    fn validate(&self, initial: u32) -> Result<(), ConfigError> {
        if self.min_limit == 0 {
            return Err(ConfigError::new("min_limit", "must be at least 1"));
        }
        if self.min_limit > initial {
            return Err(ConfigError::new(
                "min_limit",
                "must not exceed `max_concurrent_calls`, where the limit starts",
            ));
        }
        if self.max_limit < initial {
            return Err(ConfigError::new(
                "max_limit",
                "must be at least `max_concurrent_calls`, where the limit starts",
            ));
        }
        if self.max_limit > MAX_CONCURRENT_CALLS {
            return Err(ConfigError::new(
                "max_limit",
                format!("must be at most {MAX_CONCURRENT_CALLS}"),
            ));
        }
        if self.latency_threshold.is_zero() {
            return Err(ConfigError::new(
                "latency_threshold",
                "must be greater than zero",
            ));
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return Err(ConfigError::new(
                "decrease_factor",
                format!("must be in (0, 1), got {}", self.decrease_factor),
            ));
        }
        if self.increase_by == 0 {
            return Err(ConfigError::new("increase_by", "must be at least 1"));
        }
        Ok(())
    }
}
