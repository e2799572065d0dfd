//! `ResilienceConfig`: one serde document for a whole stack, every section optional.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_breaker::CircuitBreakerConfig;
use switchyard_bulkhead::BulkheadConfig;
use switchyard_core::ConfigError;
use switchyard_ratelimit::RateLimitConfig;
use switchyard_retry::RetryConfig;

/// The resilience of one route or provider, as data: a missing section is a layer left out,
/// and an empty document is no layer at all.
///
/// ```
/// use std::time::Duration;
/// use switchyard_resilience::ResilienceConfig;
///
/// let config = ResilienceConfig::from_json(r#"{
///     "timeout": "2s",
///     "rate_limit": { "rate": "100/s" },
///     "bulkhead": { "max_concurrent_calls": 10 },
///     "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 5 } } },
///     "retry": { "max_attempts": 3 }
/// }"#).unwrap();
/// assert_eq!(config.timeout, Some(Duration::from_secs(2)));
///
/// let err = ResilienceConfig::from_json(r#"{ "retry": { "backoff": { "multiplier": 0.5 } } }"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "retry.backoff.multiplier");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// The deadline of each attempt (inside the retry).
    #[serde(
        with = "switchyard_core::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The deadline of the whole call, retries and their backoffs included (outside every
    /// layer). It starts when the call is made: waits in `poll_ready` before it (a rate limit
    /// in wait mode, a bulkhead queue) are bounded by their own `max_wait`.
    #[serde(
        with = "switchyard_core::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_timeout: Option<Duration>,
    /// A rate limit shared by every caller of the stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// A cap on concurrent calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<BulkheadConfig>,
    /// A circuit breaker over the calls (each call's final result, after its retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Retries of failed attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// The name of a service to answer from when the stack fails (resolved by whoever builds
    /// the stack: the router looks it up among its local services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl ResilienceConfig {
    /// Reads and validates a JSON document.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the JSON path of the first bad field: one that does not parse
    /// (`retry.backoff.initial`), is unknown, or holds a value that cannot work.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self = switchyard_core::config::from_json(text, "config")?;
        config.validate()?;
        Ok(config)
    }

    /// Whether no section is set: the stack is the inner service alone.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks every section.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the dotted path of the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, timeout) in [
            ("timeout", self.timeout),
            ("total_timeout", self.total_timeout),
        ] {
            if timeout.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(field, "must be longer than zero"));
            }
        }
        if let (Some(total), Some(each)) = (self.total_timeout, self.timeout)
            && total < each
        {
            return Err(ConfigError::new(
                "total_timeout",
                "must be at least `timeout`, the deadline of one attempt",
            ));
        }
        if let Some(rate_limit) = &self.rate_limit {
            rate_limit.validate().map_err(|e| e.within("rate_limit"))?;
        }
        if let Some(bulkhead) = &self.bulkhead {
            bulkhead.validate().map_err(|e| e.within("bulkhead"))?;
        }
        if let Some(breaker) = &self.circuit_breaker {
            breaker
                .validate()
                .map_err(|e| e.within("circuit_breaker"))?;
        }
        if let Some(retry) = &self.retry {
            retry.validate().map_err(|e| e.within("retry"))?;
        }
        if self
            .fallback
            .as_deref()
            .is_some_and(|f| f.trim().is_empty())
        {
            return Err(ConfigError::new("fallback", "must name a service"));
        }
        Ok(())
    }
}
