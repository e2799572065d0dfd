//! Passive outlier detection's settings: [`OutlierConfig`], [`FailureRate`], their defaults and
//! their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;

/// Passive outlier detection, after Envoy's: an endpoint whose calls fail `consecutive_failures`
/// times in a row — or, with `failure_rate`, whose failure rate over its last calls reaches a
/// threshold — is ejected for `base_ejection` × the number of times it has been ejected (at
/// most `max_ejection`; the count starts over once the endpoint has stayed in for
/// `max_ejection`), unless that would eject more than `max_ejection_percent` of the endpoints —
/// so the balancer never ejects everyone.
///
/// [`Balance::with_outlier`](crate::Balance::with_outlier) refuses a config that
/// [`validate`](Self::validate) refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (at least 1).
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// The first ejection's length (above zero); each further ejection is one more multiple
    /// of it.
    #[serde(default = "default_base", with = "switchyard_core::duration")]
    pub base_ejection: Duration,
    /// The longest ejection (at least `base_ejection`).
    #[serde(default = "default_max", with = "switchyard_core::duration")]
    pub max_ejection: Duration,
    /// The largest share of endpoints ejected at once, in percent (0 to 100).
    #[serde(default = "default_percent")]
    pub max_ejection_percent: u8,
    /// Also eject on a failure rate (off by default).
    #[serde(default)]
    pub failure_rate: Option<FailureRate>,
}

/// Ejection on a failure rate: over each run of `minimum_calls` classified calls to an
/// endpoint (a tumbling window), a failure share of at least `threshold_percent` ejects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// The failure share that ejects, in percent (1 to 100).
    pub threshold_percent: u8,
    /// The calls each window holds (at least 1).
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
}

const fn default_minimum_calls() -> u32 {
    20
}

const fn default_consecutive() -> u32 {
    5
}

const fn default_base() -> Duration {
    Duration::from_secs(30)
}

const fn default_max() -> Duration {
    Duration::from_secs(300)
}

const fn default_percent() -> u8 {
    50
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive(),
            base_ejection: default_base(),
            max_ejection: default_max(),
            max_ejection_percent: default_percent(),
            failure_rate: None,
        }
    }
}

impl OutlierConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work, as it sits in a
    /// balancer's config (`outlier.consecutive_failures`,
    /// `outlier.failure_rate.threshold_percent`, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_fields().map_err(|e| e.within("outlier"))
    }

    fn validate_fields(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        if self.base_ejection.is_zero() {
            return Err(ConfigError::new(
                "base_ejection",
                "must be greater than zero",
            ));
        }
        if self.max_ejection < self.base_ejection {
            return Err(ConfigError::new(
                "max_ejection",
                "must be at least `base_ejection`",
            ));
        }
        if self.max_ejection_percent > 100 {
            return Err(ConfigError::new(
                "max_ejection_percent",
                format!("must be at most 100, got {}", self.max_ejection_percent),
            ));
        }
        if let Some(rate) = &self.failure_rate {
            rate.validate().map_err(|e| e.within("failure_rate"))?;
        }
        Ok(())
    }
}

impl FailureRate {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.threshold_percent) {
            return Err(ConfigError::new(
                "threshold_percent",
                format!("must be from 1 to 100, got {}", self.threshold_percent),
            ));
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether `failures` of `calls` reach the threshold.
    pub(crate) fn reached(&self, failures: u32, calls: u32) -> bool {
        u64::from(failures) * 100 >= u64::from(self.threshold_percent) * u64::from(calls)
    }
}
