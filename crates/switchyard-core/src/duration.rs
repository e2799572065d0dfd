//! Humane durations in configs: `"250ms"`, `"30s"`, `"1m 30s"`.
//!
//! Use the module with serde's `with` attribute; it accepts `Duration` and `Option<Duration>`
//! fields alike, and serialises back to the same humane form. It is a thin re-export of
//! [`humantime_serde`], chosen over a home-grown parser because it is the format the Rust
//! ecosystem already reads (`humantime`), and it round-trips.
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Deserialize, Serialize, PartialEq)]
//! struct Config {
//!     #[serde(with = "switchyard_core::duration")]
//!     wait: Duration,
//!     #[serde(with = "switchyard_core::duration", default)]
//!     limit: Option<Duration>,
//! }
//!
//! let config: Config = serde_json::from_str(r#"{ "wait": "1m 30s" }"#).unwrap();
//! assert_eq!(config.wait, Duration::from_secs(90));
//! assert_eq!(config.limit, None);
//! assert_eq!(serde_json::to_string(&config).unwrap(), r#"{"wait":"1m 30s","limit":null}"#);
//! ```

pub use humantime_serde::{deserialize, serialize};
