//! The bulkhead's config: plain serde data, validated with errors that name the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;

/// How many calls a bulkhead lets run at once, and what it does with the next one.
///
/// ```
/// use std::time::Duration;
/// use switchyard_bulkhead::{BulkheadConfig, Policy};
///
/// let config: BulkheadConfig = serde_json::from_str(r#"{
///     "max_concurrent_calls": 10,
///     "policy": { "queue": { "capacity": 50, "max_wait": "250ms" } }
/// }"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.policy, Policy::Queue { capacity: 50, max_wait: Duration::from_millis(250) });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed in flight at once (the policy decides what happens beyond).
    pub max_concurrent_calls: u32,
    /// What happens to a call when all slots are taken.
    pub policy: Policy,
}

impl Default for BulkheadConfig {
    /// 25 concurrent calls (Resilience4j's default), hard reject beyond.
    fn default() -> Self {
        Self {
            max_concurrent_calls: 25,
            policy: Policy::HardReject,
        }
    }
}

impl BulkheadConfig {
    /// `max_concurrent_calls` slots with `policy`.
    pub fn new(max_concurrent_calls: u32, policy: Policy) -> Self {
        Self {
            max_concurrent_calls,
            policy,
        }
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
        if let Policy::Queue { capacity, max_wait } = self.policy {
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

/// What a full bulkhead does with the next call: the four policies of switchyard's seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
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

impl Policy {
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
