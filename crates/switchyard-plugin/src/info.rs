//! What a plugin says about itself: [`PluginInfo`], and its [`HealthStatus`] with the
//! balancer's [`Health`] as its status.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize};
pub use switchyard_balance::Health;

/// A plugin's identity and capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginInfo {
    /// Its unique name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Who maintains it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// The operations it supports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Anything else it says about itself.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// How a plugin is doing, as its health check found.
///
/// In JSON, `status` is written as a name (`"healthy"`) and read from a name or from the
/// integer Go writes (`0` unknown, `1` healthy, `2` degraded, `3` unhealthy, `4` offline);
/// `response_time` as Go's duration text, read from text or integer nanoseconds;
/// `last_check` as seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// The verdict.
    #[serde(deserialize_with = "health")]
    pub status: Health,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it was checked.
    #[serde(default = "epoch", with = "unix_seconds")]
    pub last_check: SystemTime,
    /// How long the check took.
    #[serde(default, with = "crate::go_duration::serde")]
    pub response_time: Duration,
    /// Anything else the check found.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl HealthStatus {
    /// A status checked now, with `message`.
    pub fn now(status: Health, message: impl Into<String>, response_time: Duration) -> Self {
        Self {
            status,
            message: message.into(),
            last_check: SystemTime::now(),
            response_time,
            metadata: BTreeMap::new(),
        }
    }
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

fn health<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Health, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Go(u8),
        Name(Health),
    }
    match Either::deserialize(deserializer)? {
        Either::Name(health) => Ok(health),
        Either::Go(n) => [
            Health::Unknown,
            Health::Healthy,
            Health::Degraded,
            Health::Unhealthy,
            Health::Offline,
        ]
        .get(usize::from(n))
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown health status {n}"))),
    }
}

mod unix_seconds {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        at: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        serializer.serialize_u64(secs)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_go_integers_and_names_and_writes_names() {
        let go: HealthStatus =
            serde_json::from_str(r#"{"status": 2, "response_time": 1500000}"#).unwrap();
        assert_eq!(go.status, Health::Degraded);
        assert_eq!(go.response_time, Duration::from_micros(1_500));
        let named: HealthStatus =
            serde_json::from_str(r#"{"status": "offline", "message": "gone", "last_check": 60}"#)
                .unwrap();
        assert_eq!(named.status, Health::Offline);
        let text = serde_json::to_string(&named).unwrap();
        assert_eq!(
            text,
            r#"{"status":"offline","message":"gone","last_check":60,"response_time":"0s"}"#
        );
        assert!(serde_json::from_str::<HealthStatus>(r#"{"status": 9}"#).is_err());
    }

    #[test]
    fn info_round_trips_and_leaves_empty_fields_out() {
        let info: PluginInfo = serde_json::from_str(
            r#"{"name": "auth", "version": "1.2.0", "capabilities": ["validate"]}"#,
        )
        .unwrap();
        assert_eq!(info.capabilities, ["validate"]);
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(
            text,
            r#"{"name":"auth","version":"1.2.0","capabilities":["validate"]}"#
        );
        assert_eq!(serde_json::from_str::<PluginInfo>(&text).unwrap(), info);
    }
}
