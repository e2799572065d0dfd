//! The retry config: plain serde data, validated with errors that name the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;

/// How many times to try a call, how long to wait between tries, and how much retrying the
/// whole service may do.
///
/// ```
/// use std::time::Duration;
/// use switchyard_retry::{Jitter, RetryConfig};
///
/// let config: RetryConfig = serde_json::from_str(r#"{
///     "max_attempts": 4,
///     "backoff": { "initial": "50ms", "multiplier": 3.0, "max": "2s" },
///     "jitter": "decorrelated",
///     "budget": { "ttl": "10s", "min_per_sec": 5, "retry_ratio": 0.1 }
/// }"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.max_attempts, 4);
/// assert_eq!(config.backoff.initial, Duration::from_millis(50));
/// assert_eq!(config.jitter, Jitter::Decorrelated);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included: `1` never retries. At most [`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// The delay before each retry, growing exponentially.
    pub backoff: BackoffConfig,
    /// How the delay is randomised, so that clients that failed together do not retry together.
    pub jitter: Jitter,
    /// A limit on retries relative to first attempts across every call of the service, so that
    /// retries cannot multiply the load on a failing backend. `null` turns it off.
    pub budget: Option<BudgetConfig>,
    /// A rejection or response asking to be retried later than this (`retry_after`,
    /// `Retry-After`) is not retried: the caller gets the answer at once instead of waiting.
    /// At most 1 hour.
    #[serde(with = "switchyard_core::duration")]
    pub max_retry_after: Duration,
    /// HTTP: the largest request body buffered for replay, in bytes. A larger body is sent as it
    /// streams, and its call is not retried.
    pub max_body_bytes: usize,
    /// HTTP: the methods retried without being marked [`Idempotent`](crate::http::Idempotent).
    /// The idempotent methods of RFC 9110 by default; add `POST` for a gRPC client whose every
    /// method may be repeated.
    pub methods: Vec<String>,
}

/// The most attempts a config may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// The idempotent methods of RFC 9110 §9.2.2, retried by default.
pub const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

impl Default for RetryConfig {
    /// Three attempts, 100 ms doubling to at most 10 s with full jitter, tower's default budget
    /// (20 % of first attempts over 10 s, at least 10 retries a second), at most 30 s of
    /// `retry_after`, 64 KiB bodies, the idempotent methods.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: BackoffConfig::default(),
            jitter: Jitter::Full,
            budget: Some(BudgetConfig::default()),
            max_retry_after: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            methods: IDEMPOTENT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

impl RetryConfig {
    /// The default config with `max_attempts` attempts in all.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..Self::default()
        }
    }

    /// Sets the backoff.
    #[must_use]
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the jitter.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets (or, with `None`, removes) the retry budget.
    #[must_use]
    pub fn with_budget(mut self, budget: Option<BudgetConfig>) -> Self {
        self.budget = budget;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!("must be from 1 to {MAX_ATTEMPTS}"),
            ));
        }
        self.backoff
            .validate(self.jitter)
            .map_err(|e| e.within("backoff"))?;
        if self.max_retry_after > MAX_DELAY {
            return Err(ConfigError::new(
                "max_retry_after",
                "must be at most 1 hour",
            ));
        }
        if let Some(budget) = &self.budget {
            budget.validate().map_err(|e| e.within("budget"))?;
        }
        if self.max_body_bytes > MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be at most {MAX_BODY_BYTES} (64 MiB)"),
            ));
        }
        for (i, method) in self.methods.iter().enumerate() {
            // Methods are case-sensitive: `get` would parse, as an extension method nobody sends.
            if method.is_empty()
                || method.bytes().any(|b| b.is_ascii_lowercase())
                || http::Method::from_bytes(method.as_bytes()).is_err()
            {
                return Err(ConfigError::new(
                    format!("methods[{i}]"),
                    format!("`{method}` is not an upper-case HTTP method"),
                ));
            }
        }
        Ok(())
    }
}

/// The most body bytes a config may ask to buffer per call.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The delay before retry `n` (from 1) is `initial × multiplier^(n-1)`, at most `max`, before
/// jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// The delay before the first retry.
    #[serde(with = "switchyard_core::duration")]
    pub initial: Duration,
    /// The growth factor per retry, at least 1.
    pub multiplier: f64,
    /// The longest delay.
    #[serde(with = "switchyard_core::duration")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    /// 100 ms, doubling, at most 10 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(10),
        }
    }
}

impl BackoffConfig {
    /// A backoff from `initial` growing by `multiplier` up to `max`.
    pub fn new(initial: Duration, multiplier: f64, max: Duration) -> Self {
        Self {
            initial,
            multiplier,
            max,
        }
    }

    /// The same delay before every retry.
    pub fn constant(delay: Duration) -> Self {
        Self::new(delay, 1.0, delay)
    }

    /// Checks every field, for delays randomised by `jitter`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field (`initial`, `multiplier` or `max`): a
    /// multiplier below 1 or not finite, a delay over an hour, `max` below `initial`, or a
    /// zero `initial` under decorrelated jitter (which grows from it).
    pub fn validate(&self, jitter: Jitter) -> Result<(), ConfigError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "multiplier",
                "must be a finite number of at least 1",
            ));
        }
        if self.initial > MAX_DELAY {
            return Err(ConfigError::new("initial", "must be at most 1 hour"));
        }
        if self.max > MAX_DELAY {
            return Err(ConfigError::new("max", "must be at most 1 hour"));
        }
        if self.max < self.initial {
            return Err(ConfigError::new(
                "initial",
                "must be at most `max` (10s unless set)",
            ));
        }
        if jitter == Jitter::Decorrelated && self.initial.is_zero() {
            return Err(ConfigError::new(
                "initial",
                "must be longer than zero with decorrelated jitter, which grows from it",
            ));
        }
        Ok(())
    }
}

/// The longest delay between attempts a config may ask for.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// How the backoff delay is randomised (see AWS's "Exponential Backoff and Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the backoff delay.
    None,
    /// Uniform in `[0, delay]`: spreads retries the most (the default).
    #[default]
    Full,
    /// Uniform in `[delay/2, delay]`: never retries at once.
    Equal,
    /// Uniform in `[initial, 3 × previous delay]`, at most `max`: grows with the previous delay
    /// rather than the attempt number.
    Decorrelated,
}

/// A retry budget (tower's `TpsBudget`): retries may add at most `retry_ratio` of the first
/// attempts seen over the last `ttl`, plus `min_per_sec` retries a second whatever the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// How long a first attempt counts towards the budget: from 1 s to 60 s.
    #[serde(with = "switchyard_core::duration")]
    pub ttl: Duration,
    /// Retries allowed a second regardless of traffic, so that a quiet service still retries.
    pub min_per_sec: u32,
    /// Retries allowed per first attempt: `0.2` lets retries add at most 20 % to the load.
    pub retry_ratio: f32,
}

impl Default for BudgetConfig {
    /// tower's default: 10 s, 10 retries a second, 20 %.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

impl BudgetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // tower's `TpsBudget::new` panics outside these bounds: they are checked here instead.
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.ttl) {
            return Err(ConfigError::new("ttl", "must be from 1s to 60s"));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::new("min_per_sec", "must be below 2^31 - 1"));
        }
        if !(self.retry_ratio.is_finite() && (0.0..=1000.0).contains(&self.retry_ratio)) {
            return Err(ConfigError::new("retry_ratio", "must be from 0 to 1000"));
        }
        Ok(())
    }
}
