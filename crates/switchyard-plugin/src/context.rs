//! One call to a plugin: its [`ExecutionContext`], the [`PluginRequest`] carrying raw JSON data,
//! and the [`PluginResponse`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What travels with every call, as the plugin protocol names it: a request id (made when
/// absent), the deadline (which bounds the call and is sent to the plugin), how many retries
/// the caller allows, headers (sent as HTTP headers, gRPC metadata or message headers) and
/// metadata.
///
/// In JSON, `timeout` is written as Go's duration text (`"30s"`) and read from that, humane
/// text, or Go's integer nanoseconds; absent, the call has no deadline of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionContext {
    /// Correlates the call across processes; [`ensure_request_id`](Self::ensure_request_id)
    /// makes one when it is empty.
    pub request_id: String,
    /// The call's deadline, if any.
    #[serde(with = "optional_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retries the caller allows after the first try.
    pub max_retries: u32,
    /// Sent with the call as headers or metadata.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Carried with the call, for the plugin's own use.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl ExecutionContext {
    /// A context with a fresh request id.
    pub fn new() -> Self {
        let mut ctx = Self::default();
        ctx.ensure_request_id();
        ctx
    }

    /// The context with `timeout` as its deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The context with one more header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Makes a request id when there is none (`req-` and 16 hex digits), and returns it.
    pub fn ensure_request_id(&mut self) -> &str {
        if self.request_id.is_empty() {
            self.request_id = new_request_id();
        }
        &self.request_id
    }
}

/// A fresh request id: `req-` and 16 hex digits.
pub(crate) fn new_request_id() -> String {
    format!("req-{:016x}", fastrand::u64(..))
}

/// A call's input: its context and its data, raw JSON handed to the plugin as it is.
#[derive(Debug, Clone)]
pub struct PluginRequest {
    /// The call's context.
    pub ctx: ExecutionContext,
    /// The data, as JSON text (never parsed on the way through).
    pub data: Box<RawValue>,
}

impl PluginRequest {
    /// A request for `data` (JSON text) with a fresh context.
    ///
    /// # Errors
    ///
    /// `data` is not JSON.
    pub fn new(data: impl Into<String>) -> Result<Self, serde_json::Error> {
        Ok(Self {
            ctx: ExecutionContext::new(),
            data: RawValue::from_string(data.into())?,
        })
    }

    /// A request for `value`, serialised, with a fresh context.
    ///
    /// # Errors
    ///
    /// `value` does not serialise to JSON.
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            ctx: ExecutionContext::new(),
            data: serde_json::value::to_raw_value(value)?,
        })
    }
}

/// A call's output: the plugin's data (raw JSON) and what it says about the call.
#[derive(Debug, Clone)]
pub struct PluginResponse {
    /// The data, as JSON text.
    pub data: Box<RawValue>,
    /// Headers or metadata the plugin sent back.
    pub metadata: BTreeMap<String, String>,
}

impl PluginResponse {
    /// Reads the data as `T`.
    ///
    /// # Errors
    ///
    /// The data is not a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }
}

mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => crate::go_duration::serde::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Go(#[serde(with = "crate::go_duration::serde")] Duration);
        // Go writes a zero `time.Duration` as 0: no deadline.
        Ok(Option::<Go>::deserialize(deserializer)?
            .map(|Go(d)| d)
            .filter(|d| !d.is_zero()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_reads_what_go_writes_and_writes_go_text() {
        let go = r#"{"request_id":"req-1","timeout":5000000000,"max_retries":2,
                     "headers":{"X-Trace-ID":"abc"}}"#;
        let ctx: ExecutionContext = serde_json::from_str(go).unwrap();
        assert_eq!(ctx.timeout, Some(Duration::from_secs(5)));
        assert_eq!((ctx.request_id.as_str(), ctx.max_retries), ("req-1", 2));
        assert_eq!(ctx.headers["X-Trace-ID"], "abc");
        assert_eq!(
            serde_json::to_string(&ctx).unwrap(),
            r#"{"request_id":"req-1","timeout":"5s","max_retries":2,"headers":{"X-Trace-ID":"abc"}}"#
        );
        let zero: ExecutionContext = serde_json::from_str(r#"{"timeout": 0}"#).unwrap();
        assert_eq!(zero.timeout, None, "Go's zero duration is no deadline");
    }

    #[test]
    fn a_request_id_is_made_once_when_absent() {
        let mut ctx = ExecutionContext::default();
        let id = ctx.ensure_request_id().to_owned();
        assert!(id.starts_with("req-") && id.len() == 20, "{id}");
        assert_eq!(ctx.ensure_request_id(), id, "kept once made");
        assert_ne!(ExecutionContext::new().request_id, id);
    }

    #[test]
    fn data_stays_raw_and_decodes_on_demand() {
        let request = PluginRequest::new(r#"{"user_id": "u1",  "n": 1.50}"#).unwrap();
        assert_eq!(
            request.data.get(),
            r#"{"user_id": "u1",  "n": 1.50}"#,
            "untouched"
        );
        assert!(PluginRequest::new("{not json").is_err());
        let response = PluginResponse {
            data: serde_json::value::to_raw_value(&serde_json::json!({"ok": true})).unwrap(),
            metadata: BTreeMap::new(),
        };
        let value: serde_json::Value = response.decode().unwrap();
        assert_eq!(value["ok"], true);
    }
}
