//! A route's `config` column: a resilience stack plus options for its transport.

use serde_json::{Map, Value};
use switchyard_core::ConfigError;
use switchyard_resilience::ResilienceConfig;

/// A route's config document, parsed.
///
/// The document is a [`ResilienceConfig`] (every section optional: `timeout`,
/// `total_timeout`, `rate_limit`, `bulkhead`, `circuit_breaker`, `retry`, `fallback`) with one
/// more optional key, `transport`, an object handed as it is to the route's transport factory
/// (for `http`: `content_type`, `max_response_bytes`).
///
/// ```
/// use switchyard_router::RouteConfig;
///
/// let config = RouteConfig::from_json(r#"{
///     "timeout": "2s",
///     "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 3 } } },
///     "transport": { "content_type": "application/json" }
/// }"#)?;
/// assert!(config.resilience.timeout.is_some());
/// assert_eq!(config.transport["content_type"], "application/json");
///
/// let err = RouteConfig::from_json(r#"{ "retry": { "max_attempts": 0 } }"#).unwrap_err();
/// assert_eq!(err.field(), "retry.max_attempts");
/// # Ok::<(), switchyard_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteConfig {
    /// The resilience stack wrapped around the route's service.
    pub resilience: ResilienceConfig,
    /// The `transport` object (an empty object when absent).
    pub transport: Value,
}

impl RouteConfig {
    /// Parses and validates a config document. An empty or all-whitespace document is the
    /// default (no stack, no transport options).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the JSON path of the first bad field.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self {
                transport: Value::Object(Map::new()),
                ..Self::default()
            });
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::new("config", format!("malformed JSON: {e}")))?;
        let Value::Object(mut fields) = value else {
            return Err(ConfigError::new("config", "expected a JSON object"));
        };
        let transport = match fields.remove("transport") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(object @ Value::Object(_)) => object,
            Some(_) => return Err(ConfigError::new("transport", "expected a JSON object")),
        };
        // Read from the parsed value, not printed and parsed again.
        let resilience: ResilienceConfig =
            switchyard_core::config::deserialize(Value::Object(fields), "config")?;
        resilience.validate()?;
        Ok(Self {
            resilience,
            transport,
        })
    }
}
