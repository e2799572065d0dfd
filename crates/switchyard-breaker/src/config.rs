//! The breaker's config: plain serde data, validated with errors that name the field.
//!
//! The defaults: open after 5 consecutive failures, wait 30 s, admit one probe
//! at a time in half-open and close after 2 successful probes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;

/// The largest count window: the window keeps one byte per call and packs its totals into
/// one atomic word (see `window.rs`).
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;

/// The most buckets a time window may have.
pub const MAX_TIME_BUCKETS: u32 = 1_000;

/// The longest time window. The window keeps its call and failure totals in 32 bits each, so
/// an hour holds up to 1.19 million calls a second per breaker.
pub const MAX_TIME_WINDOW: Duration = Duration::from_secs(3600);

/// How a circuit breaker decides, and what it does, over its life.
///
/// ```
/// use std::time::Duration;
/// use switchyard_breaker::{CircuitBreakerConfig, Trip};
///
/// let config: CircuitBreakerConfig = serde_json::from_str(r#"{
///     "trip": { "failure_rate": {
///         "window": { "count": 100 },
///         "failure_rate_threshold": 50,
///         "minimum_calls": 20
///     } },
///     "wait_in_open": "10s",
///     "wait_in_open_multiplier": 2.0,
///     "max_wait_in_open": "2m"
/// }"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.wait_in_open, Duration::from_secs(10));
/// assert!(matches!(config.trip, Trip::FailureRate(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// What trips the breaker open while it is closed.
    pub trip: Trip,
    /// How long the breaker stays open before it lets probes through (half-open).
    #[serde(with = "switchyard_core::duration")]
    pub wait_in_open: Duration,
    /// Each time a half-open probe fails and the breaker reopens, the open wait is multiplied
    /// by this (1.0 keeps it constant). Closing resets it to `wait_in_open`.
    pub wait_in_open_multiplier: f64,
    /// The ceiling for a growing open wait.
    #[serde(with = "switchyard_core::duration")]
    pub max_wait_in_open: Duration,
    /// How many probe calls may be in flight at once while half-open.
    pub permitted_calls_in_half_open: u32,
    /// How many probe successes close the breaker again; one probe failure reopens it.
    pub successes_to_close: u32,
    /// A breaker that stays half-open this long without a verdict (a probe hung, or a readied
    /// service holding the probe slot was never called) reopens, so a lost probe cannot wedge
    /// it. Default 60 s; `null` waits for the probes forever, as Resilience4j's default does.
    #[serde(with = "switchyard_core::duration")]
    pub max_wait_in_half_open: Option<Duration>,
    /// What `poll_ready` does while the breaker refuses calls.
    pub mode: BreakerMode,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            trip: Trip::default(),
            wait_in_open: Duration::from_secs(30),
            wait_in_open_multiplier: 1.0,
            max_wait_in_open: Duration::from_secs(300),
            permitted_calls_in_half_open: 1,
            successes_to_close: 2,
            max_wait_in_half_open: Some(Duration::from_secs(60)),
            mode: BreakerMode::FailFast,
        }
    }
}

impl CircuitBreakerConfig {
    /// The default config with `trip` replaced.
    pub fn new(trip: Trip) -> Self {
        Self {
            trip,
            ..Self::default()
        }
    }

    /// Sets [`wait_in_open`](Self::wait_in_open).
    #[must_use]
    pub fn with_wait_in_open(mut self, wait: Duration) -> Self {
        self.wait_in_open = wait;
        self
    }

    /// Makes the open wait grow by `multiplier` on every failed half-open probe, up to `max`.
    #[must_use]
    pub fn with_exponential_open_wait(mut self, multiplier: f64, max: Duration) -> Self {
        self.wait_in_open_multiplier = multiplier;
        self.max_wait_in_open = max;
        self
    }

    /// Sets how many probes may run at once in half-open and how many successes close.
    #[must_use]
    pub fn with_half_open(mut self, permitted_calls: u32, successes_to_close: u32) -> Self {
        self.permitted_calls_in_half_open = permitted_calls;
        self.successes_to_close = successes_to_close;
        self
    }

    /// Sets [`max_wait_in_half_open`](Self::max_wait_in_half_open).
    #[must_use]
    pub fn with_max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.max_wait_in_half_open = Some(wait);
        self
    }

    /// Sets the [`BreakerMode`].
    #[must_use]
    pub fn with_mode(mut self, mode: BreakerMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.trip.validate().map_err(|e| e.within("trip"))?;
        if self.wait_in_open.is_zero() {
            return Err(ConfigError::new(
                "wait_in_open",
                "must be greater than zero",
            ));
        }
        if !(self.wait_in_open_multiplier.is_finite() && self.wait_in_open_multiplier >= 1.0) {
            return Err(ConfigError::new(
                "wait_in_open_multiplier",
                format!(
                    "must be a finite number >= 1.0, got {}",
                    self.wait_in_open_multiplier
                ),
            ));
        }
        if self.max_wait_in_open < self.wait_in_open {
            return Err(ConfigError::new(
                "max_wait_in_open",
                "must be at least `wait_in_open`",
            ));
        }
        if self.permitted_calls_in_half_open == 0 {
            return Err(ConfigError::new(
                "permitted_calls_in_half_open",
                "must be at least 1",
            ));
        }
        if self.successes_to_close == 0 {
            return Err(ConfigError::new("successes_to_close", "must be at least 1"));
        }
        if self.max_wait_in_half_open.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "max_wait_in_half_open",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// What trips a closed breaker open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trip {
    /// Open after `threshold` failures in a row; any success resets the count (the classic
    /// model). Written `{"consecutive_failures": {"threshold": 5}}`.
    ConsecutiveFailures {
        /// Failures in a row that open the breaker.
        threshold: u32,
    },
    /// Open when the failure rate or slow-call rate over a sliding window crosses a
    /// threshold (Resilience4j's model).
    FailureRate(RateConfig),
}

impl Default for Trip {
    fn default() -> Self {
        Self::ConsecutiveFailures { threshold: 5 }
    }
}

impl Trip {
    /// Open after `threshold` consecutive failures.
    pub fn consecutive_failures(threshold: u32) -> Self {
        Self::ConsecutiveFailures { threshold }
    }

    /// Open when at least `threshold_percent` of the last `size` calls failed.
    pub fn count_window(size: u32, threshold_percent: f64) -> RateConfig {
        RateConfig::new(FailureWindow::Count(size), threshold_percent)
    }

    /// Open when at least `threshold_percent` of the calls of the last `duration` failed.
    pub fn time_window(duration: Duration, threshold_percent: f64) -> RateConfig {
        RateConfig::new(FailureWindow::time(duration), threshold_percent)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::ConsecutiveFailures { threshold } => {
                if *threshold == 0 {
                    return Err(ConfigError::new(
                        "consecutive_failures.threshold",
                        "must be at least 1",
                    ));
                }
                Ok(())
            }
            Self::FailureRate(rate) => rate.validate().map_err(|e| e.within("failure_rate")),
        }
    }
}

impl From<RateConfig> for Trip {
    fn from(rate: RateConfig) -> Self {
        Self::FailureRate(rate)
    }
}

/// Rate-based tripping over a sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// The window the rates are computed over.
    pub window: FailureWindow,
    /// Percentage of failed calls (0–100] at or above which the breaker opens.
    #[serde(default = "RateConfig::default_failure_rate")]
    pub failure_rate_threshold: f64,
    /// Percentage of slow calls (0–100] at or above which the breaker opens; needs
    /// `slow_call_duration`.
    #[serde(default = "RateConfig::default_slow_call_rate")]
    pub slow_call_rate_threshold: f64,
    /// A call that takes longer than this is slow, whether or not it succeeded. Unset: calls
    /// are never slow and no clock is read for them.
    #[serde(default, with = "switchyard_core::duration")]
    pub slow_call_duration: Option<Duration>,
    /// Rates are not judged until the window holds at least this many calls.
    #[serde(default = "RateConfig::default_minimum_calls")]
    pub minimum_calls: u32,
}

impl RateConfig {
    fn default_failure_rate() -> f64 {
        50.0
    }
    fn default_slow_call_rate() -> f64 {
        100.0
    }
    fn default_minimum_calls() -> u32 {
        10
    }

    /// A rate config with the default slow-call and minimum-call settings.
    pub fn new(window: FailureWindow, failure_rate_threshold: f64) -> Self {
        Self {
            window,
            failure_rate_threshold,
            slow_call_rate_threshold: Self::default_slow_call_rate(),
            slow_call_duration: None,
            minimum_calls: Self::default_minimum_calls(),
        }
    }

    /// Counts calls slower than `duration` as slow and opens when `threshold_percent` of the
    /// window is slow.
    #[must_use]
    pub fn with_slow_calls(mut self, duration: Duration, threshold_percent: f64) -> Self {
        self.slow_call_duration = Some(duration);
        self.slow_call_rate_threshold = threshold_percent;
        self
    }

    /// Sets [`minimum_calls`](Self::minimum_calls).
    #[must_use]
    pub fn with_minimum_calls(mut self, minimum_calls: u32) -> Self {
        self.minimum_calls = minimum_calls;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.window.validate().map_err(|e| e.within("window"))?;
        check_percent("failure_rate_threshold", self.failure_rate_threshold)?;
        check_percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.slow_call_duration.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be greater than zero",
            ));
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        if let FailureWindow::Count(size) = self.window
            && self.minimum_calls > size
        {
            return Err(ConfigError::new(
                "minimum_calls",
                format!("must not exceed the window size ({size}), or the breaker can never open"),
            ));
        }
        Ok(())
    }
}

fn check_percent(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be a percentage in (0, 100], got {value}"),
        ))
    }
}

/// The sliding window a failure rate is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FailureWindow {
    /// The last `n` calls: `{"count": 100}`.
    Count(u32),
    /// The calls of the last `duration`, kept in `buckets` equal slices that expire one at a
    /// time: `{"time": {"duration": "60s", "buckets": 12}}`.
    Time {
        /// The window's length.
        #[serde(with = "switchyard_core::duration")]
        duration: Duration,
        /// How many slices the window is kept in (its resolution).
        #[serde(default = "FailureWindow::default_buckets")]
        buckets: u32,
    },
}

impl FailureWindow {
    fn default_buckets() -> u32 {
        10
    }

    /// A time window of `duration` in the default 10 buckets.
    pub fn time(duration: Duration) -> Self {
        Self::Time {
            duration,
            buckets: Self::default_buckets(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Self::Count(size) => {
                if size == 0 || size > MAX_COUNT_WINDOW {
                    return Err(ConfigError::new(
                        "count",
                        format!("must be between 1 and {MAX_COUNT_WINDOW}, got {size}"),
                    ));
                }
            }
            Self::Time { duration, buckets } => {
                if buckets == 0 || buckets > MAX_TIME_BUCKETS {
                    return Err(ConfigError::new(
                        "time.buckets",
                        format!("must be between 1 and {MAX_TIME_BUCKETS}, got {buckets}"),
                    ));
                }
                if duration < Duration::from_millis(u64::from(buckets)) {
                    return Err(ConfigError::new(
                        "time.duration",
                        "must give each bucket at least 1ms",
                    ));
                }
                if duration > MAX_TIME_WINDOW {
                    return Err(ConfigError::new("time.duration", "must be at most 1h"));
                }
            }
        }
        Ok(())
    }
}

/// What the service does while the breaker refuses calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerMode {
    /// `poll_ready` answers `Ok` and `call` returns a ready
    /// [`BreakerOpen`](crate::BreakerOpen) error, as `tower::load_shed` does. The default:
    /// right in front of a `Buffer` or a balancer, which take an `Err` from `poll_ready` to
    /// mean the service is dead.
    #[default]
    FailFast,
    /// `poll_ready` stays `Pending` until the breaker would admit a call (its open wait ends,
    /// or a half-open probe slot frees), woken by a tokio timer or the breaker's transition.
    /// For callers that would rather wait than fail, such as a queue consumer.
    Backpressure,
}
