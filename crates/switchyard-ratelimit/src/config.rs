//! Quotas and modes from config: `"100/s"`, `"5000/min"`, a burst, reject or wait.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use switchyard_core::ConfigError;

/// How many calls per how long: `"100/s"`, `"5000/min"`, `"10/250ms"`.
///
/// ```
/// use std::time::Duration;
/// use switchyard_ratelimit::Rate;
///
/// let rate: Rate = "5000/min".parse().unwrap();
/// assert_eq!((rate.count, rate.per), (5000, Duration::from_secs(60)));
/// assert_eq!(rate.to_string(), "5000/1m");
/// assert!("5000 per minute".parse::<Rate>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed...
    pub count: u32,
    /// ...per this long.
    pub per: Duration,
}

/// A rate that does not read as `<count>/<period>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRate(String);

impl fmt::Display for InvalidRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid rate `{}`: expected `<count>/<period>`, as `100/s`, `5000/min` or `10/250ms`",
            self.0
        )
    }
}

impl std::error::Error for InvalidRate {}

impl FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRate(s.to_owned());
        let (count, per) = s.split_once('/').ok_or_else(invalid)?;
        let count: u32 = count.trim().parse().map_err(|_| invalid())?;
        let per = per.trim();
        let per = match per {
            "ms" => Duration::from_millis(1),
            "us" => Duration::from_micros(1),
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| invalid())?,
        };
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A rate limit: the sustained rate, the burst, and what happens to a call over it.
///
/// ```
/// use switchyard_ratelimit::{RateLimitConfig, RateLimitMode};
///
/// let config: RateLimitConfig = serde_json::from_str(
///     r#"{ "rate": "100/s", "burst": 20, "mode": { "wait": { "max_wait": "50ms" } } }"#,
/// ).unwrap();
/// config.validate().unwrap();
/// assert!(matches!(config.mode, RateLimitMode::Wait { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The sustained rate.
    pub rate: Rate,
    /// Calls allowed at once after a quiet spell (the bucket size); default: the rate's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What happens to a call over the limit.
    #[serde(default)]
    pub mode: RateLimitMode,
}

impl RateLimitConfig {
    /// `rate` with the default burst, rejecting calls over it.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            burst: None,
            mode: RateLimitMode::Reject,
        }
    }

    /// Sets the burst.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets the mode.
    #[must_use]
    pub fn with_mode(mut self, mode: RateLimitMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate.count == 0 {
            return Err(ConfigError::new("rate", "the count must be at least 1"));
        }
        if self.rate.per.is_zero() {
            return Err(ConfigError::new(
                "rate",
                "the period must be greater than zero",
            ));
        }
        let interval = self.rate.per / self.rate.count;
        if interval < Duration::from_nanos(1) {
            return Err(ConfigError::new(
                "rate",
                "more than one call per nanosecond",
            ));
        }
        // governor keeps time in u64 nanoseconds (584 years), the burst's span included.
        let interval_nanos = u64::try_from(interval.as_nanos()).map_err(|_| {
            ConfigError::new("rate", "one call per more than 584 years cannot be kept")
        })?;
        if self.burst == Some(0) {
            return Err(ConfigError::new("burst", "must be at least 1"));
        }
        let burst = u64::from(self.burst.unwrap_or(self.rate.count));
        if interval_nanos.checked_mul(burst - 1).is_none() {
            return Err(ConfigError::new(
                "burst",
                "burst times the interval between calls must stay under 584 years",
            ));
        }
        if let RateLimitMode::Wait { max_wait } = self.mode
            && max_wait.is_zero()
        {
            return Err(ConfigError::new(
                "mode.wait.max_wait",
                "must be greater than zero (use `reject` for no wait)",
            ));
        }
        Ok(())
    }

    /// The governor quota; `self` must have been validated.
    pub(crate) fn quota(&self) -> governor::Quota {
        let one = NonZeroU32::MIN;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.rate.count)).unwrap_or(one);
        let period = (self.rate.per / self.rate.count.max(1)).max(Duration::from_nanos(1));
        governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(one))
            .allow_burst(burst)
    }
}

/// What happens to a call over the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitMode {
    /// Refuse it at once with [`RateLimited`](crate::RateLimited), carrying when to retry.
    #[default]
    Reject,
    /// Wait in `poll_ready` until the limit allows it, if that is within `max_wait`;
    /// otherwise refuse it at once. Written `{"wait": {"max_wait": "100ms"}}`.
    Wait {
        /// The longest wait accepted.
        #[serde(with = "switchyard_core::duration")]
        max_wait: Duration,
    },
}
