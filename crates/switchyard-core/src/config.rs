//! Config validation errors that name the field.
//!
//! Every switchyard config struct has a `validate()` that returns a [`ConfigError`] naming the
//! offending field by its path (`trip.count_window.failure_rate_threshold`), so that a bad
//! value in a routes table or a JSON file is found without guessing.

use std::borrow::Cow;
use std::fmt;

/// A config value was rejected: which field, and why.
///
/// `Display` reads `invalid `field`: reason`.
///
/// ```
/// use switchyard_core::ConfigError;
///
/// let err = ConfigError::new("minimum_calls", "must be at least 1").within("circuit_breaker");
/// assert_eq!(err.field(), "circuit_breaker.minimum_calls");
/// assert_eq!(err.to_string(), "invalid `circuit_breaker.minimum_calls`: must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// A rejection of `field` for `reason` (lower case, no trailing period).
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path with the section it sits in, for nested configs.
    #[must_use]
    pub fn within(self, section: &str) -> Self {
        Self {
            field: Cow::Owned(format!("{section}.{}", self.field)),
            reason: self.reason,
        }
    }

    /// The dotted path of the rejected field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sections_build_a_dotted_path() {
        let err = ConfigError::new("size", "must be at least 1")
            .within("count_window")
            .within("trip");
        assert_eq!(err.field(), "trip.count_window.size");
        assert_eq!(err.reason(), "must be at least 1");
    }
}
