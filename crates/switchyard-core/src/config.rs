//! Config validation errors that name the field.
//!
//! Every switchyard config struct has a `validate()` that returns a [`ConfigError`] naming the
//! offending field by its path (`trip.count_window.failure_rate_threshold`), so that a bad
//! value in a routes table or a JSON file is found without guessing.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};

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

/// Reads a config from a JSON document, naming the JSON path of a field that fails to parse
/// or is unknown (`retry.backoff.initial`); a document that fails as a whole (malformed JSON,
/// not an object) is named `root`. It does not validate: call the config's `validate()` next.
///
/// ```
/// use serde::Deserialize;
/// use switchyard_core::config::from_json;
///
/// #[derive(Debug, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Limits {
///     burst: u32,
/// }
///
/// let limits: Limits = from_json(r#"{ "burst": 5 }"#, "limits").unwrap();
/// assert_eq!(limits.burst, 5);
/// assert_eq!(from_json::<Limits>(r#"{ "burst": -1 }"#, "limits").unwrap_err().field(), "burst");
/// assert_eq!(from_json::<Limits>("[", "limits").unwrap_err().field(), "limits");
/// ```
///
/// # Errors
///
/// A [`ConfigError`] naming the field, with serde's message as the reason.
pub fn from_json<T: DeserializeOwned>(text: &str, root: &'static str) -> Result<T, ConfigError> {
    deserialize(&mut serde_json::Deserializer::from_str(text), root)
}

/// Reads a config from any serde deserializer (a `serde_json::Value` already parsed, say), as
/// [`from_json`] does from text.
///
/// # Errors
///
/// A [`ConfigError`] naming the path of the field that failed, or `root`.
pub fn deserialize<'de, T, D>(deserializer: D, root: &'static str) -> Result<T, ConfigError>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            Cow::Borrowed(root)
        } else {
            Cow::Owned(path)
        };
        ConfigError::new(field, err.into_inner().to_string())
    })
}

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
