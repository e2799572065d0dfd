//! The wire format of unix-socket and stdio plugins: one JSON object per line (`\n`), a
//! [`Message`] from the caller and a [`Reply`] from the plugin, correlated by `request_id`.
//!
//! ```text
//! → {"type":"execute","request_id":"req-1","data":{"user":"u1"},"headers":{"X-Trace-ID":"t"},"timeout_ms":5000}
//! ← {"type":"execute","request_id":"req-1","success":true,"data":{"ok":true},"headers":{"X-Processing-Time-Ms":"3"}}
//! ← {"type":"execute","request_id":"req-2","success":false,"error":"invalid user"}
//! ```
//!
//! `type` is `execute`, `health`, `info` or `ping`; `data` is any JSON (absent for `health`,
//! `info` and `ping`); `timeout_ms` is the caller's deadline in milliseconds (absent: none). A
//! reply answers the message with the same `request_id` and `type`; `success: false` carries
//! the plugin's `error`. A line longer than the limit is refused without being kept in memory,
//! and the stream goes on with the next line.
//!
//! [`FrameCodec`] is the pure framing (a `tokio_util` codec over bytes, so it is tested with
//! no socket): it reads [`Reply`]s and writes [`Message`]s; [`PluginCodec`] is its mirror for
//! the plugin's side.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::codec::{Decoder, Encoder, LinesCodec, LinesCodecError};

use crate::context::PluginRequest;

/// The longest line either side reads by default (16 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// What a message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Run the plugin on `data`.
    Execute,
    /// Report its health (`data` of the reply: a `HealthStatus`).
    Health,
    /// Report what it is (`data` of the reply: a `PluginInfo`).
    Info,
    /// Answer, to show the connection is alive.
    Ping,
}

/// A message to a plugin (the protocol's `UnixSocketMessage`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// What it asks for.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Correlates the reply.
    pub request_id: String,
    /// The input, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The call's headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The deadline, in milliseconds.
    #[serde(
        rename = "timeout_ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
}

impl Message {
    /// The `execute` message for `request`: its id, data, headers and deadline.
    pub fn execute(request: &PluginRequest) -> Self {
        Self {
            kind: MessageType::Execute,
            request_id: request.ctx.request_id.clone(),
            data: Some(request.data.clone()),
            headers: request.ctx.headers.clone(),
            timeout_ms: request
                .ctx
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// A `health`, `info` or `ping` message, which carries no data.
    pub fn control(kind: MessageType, request_id: impl Into<String>) -> Self {
        Self {
            kind,
            request_id: request_id.into(),
            data: None,
            headers: BTreeMap::new(),
            timeout_ms: None,
        }
    }

    /// The deadline, if the message has one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// A plugin's reply (the protocol's `UnixSocketResponse`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The type of the message it answers.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The id of the message it answers.
    pub request_id: String,
    /// Whether the plugin did what was asked.
    pub success: bool,
    /// The output, as JSON text, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Headers the plugin sends back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Reply {
    /// A successful reply to `message` with `data`.
    pub fn ok(message: &Message, data: Option<Box<RawValue>>) -> Self {
        Self {
            kind: message.kind,
            request_id: message.request_id.clone(),
            success: true,
            data,
            error: String::new(),
            headers: BTreeMap::new(),
        }
    }

    /// Its data (JSON `null` when it sent none) and headers on success; its `error` and
    /// headers on failure.
    #[allow(clippy::type_complexity)]
    pub fn into_outcome(
        self,
    ) -> Result<(Box<RawValue>, BTreeMap<String, String>), (String, BTreeMap<String, String>)> {
        if !self.success {
            return Err((self.error, self.headers));
        }
        let data = self
            .data
            .unwrap_or_else(|| RawValue::from_string("null".to_owned()).expect("null is JSON"));
        Ok((data, self.headers))
    }

    /// A failed reply to `message`.
    pub fn failed(message: &Message, error: impl Into<String>) -> Self {
        Self {
            kind: message.kind,
            request_id: message.request_id.clone(),
            success: false,
            data: None,
            error: error.into(),
            headers: BTreeMap::new(),
        }
    }
}

/// What can be wrong on the wire. Each leaves the stream usable: the codec goes on with the
/// next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A line was longer than the limit; it was skipped, not kept.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A line that is not the expected JSON object (or not UTF-8).
    Malformed(String),
    /// The stream ended inside a line.
    Truncated,
    /// The peer's side closed, or failed to read or write.
    Io(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { max } => write!(f, "a line longer than {max} bytes was refused"),
            Self::Malformed(why) => write!(f, "malformed line: {why}"),
            Self::Truncated => f.write_str("the stream ended inside a line"),
            Self::Io(why) => write!(f, "wire i/o failed: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<std::io::Error> for WireError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error.to_string())
    }
}

/// Newline-delimited JSON, `In` read and `Out` written, each line at most `max_line_bytes`.
#[derive(Debug)]
pub struct Lines<In, Out> {
    lines: LinesCodec,
    max: usize,
    types: std::marker::PhantomData<fn(Out) -> In>,
}

/// The caller's side: reads [`Reply`]s, writes [`Message`]s.
pub type FrameCodec = Lines<Reply, Message>;
/// The plugin's side: reads [`Message`]s, writes [`Reply`]s.
pub type PluginCodec = Lines<Message, Reply>;

impl<In, Out> Lines<In, Out> {
    /// A codec refusing lines longer than `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            lines: LinesCodec::new_with_max_length(max_line_bytes),
            max: max_line_bytes,
            types: std::marker::PhantomData,
        }
    }

    fn parse(&self, line: Option<String>) -> Result<Option<In>, WireError>
    where
        In: serde::de::DeserializeOwned,
    {
        line.map(|line| {
            serde_json::from_str(&line).map_err(|e| WireError::Malformed(e.to_string()))
        })
        .transpose()
    }

    fn lines_error(&self, error: LinesCodecError) -> WireError {
        match error {
            LinesCodecError::MaxLineLengthExceeded => WireError::TooLong { max: self.max },
            LinesCodecError::Io(error) => error.into(),
        }
    }
}

impl<In, Out> Default for Lines<In, Out> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE_BYTES)
    }
}

impl<In: serde::de::DeserializeOwned, Out> Decoder for Lines<In, Out> {
    type Item = In;
    type Error = WireError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<In>, WireError> {
        loop {
            let line = self.lines.decode(buf).map_err(|e| self.lines_error(e))?;
            match line {
                // Blank lines (a `\r\n` peer's or a keepalive) carry nothing.
                Some(line) if line.trim().is_empty() => continue,
                line => return self.parse(line),
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<In>, WireError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        // What is left is a line the peer never ended: consumed (which also resets the line
        // codec's scan) and reported.
        match self
            .lines
            .decode_eof(buf)
            .map_err(|e| self.lines_error(e))?
        {
            Some(rest) if !rest.trim().is_empty() => Err(WireError::Truncated),
            _ => Ok(None),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for Lines<In, Out> {
    type Error = WireError;

    fn encode(&mut self, item: Out, buf: &mut BytesMut) -> Result<(), WireError> {
        // serde_json escapes newlines inside strings: a line is always one message.
        let mut writer = buf.writer();
        serde_json::to_writer(&mut writer, &item)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        writer.into_inner().put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn messages_are_written_as_the_protocol_says() {
        let mut request = PluginRequest::new(r#"{"user_id":"user123"}"#).unwrap();
        request.ctx.request_id = "req-12345".to_owned();
        request.ctx.timeout = Some(Duration::from_secs(5));
        request
            .ctx
            .headers
            .insert("X-Trace-ID".into(), "trace-abc".into());
        let mut buf = BytesMut::new();
        FrameCodec::default()
            .encode(Message::execute(&request), &mut buf)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "{\"type\":\"execute\",\"request_id\":\"req-12345\",\"data\":{\"user_id\":\"user123\"},\
             \"headers\":{\"X-Trace-ID\":\"trace-abc\"},\"timeout_ms\":5000}\n"
        );
        let mut buf = BytesMut::new();
        FrameCodec::default()
            .encode(Message::control(MessageType::Ping, "p1"), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"{\"type\":\"ping\",\"request_id\":\"p1\"}\n");
    }

    #[test]
    fn replies_are_read_from_the_protocol_examples() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(
            "{\"type\":\"execute\",\"request_id\":\"req-12345\",\"success\":true,\
             \"data\":{\"token\":\"abc123\",\"expires\":3600},\
             \"headers\":{\"X-Processing-Time-Ms\":\"23\"}}\n\
             {\"type\":\"execute\",\"request_id\":\"req-12345\",\"success\":false,\
             \"error\":\"Invalid user credentials\",\"headers\":{\"X-Error-Code\":\"AUTH_FAILED\"}}\n",
        );
        let ok = codec.decode(&mut buf).unwrap().unwrap();
        assert!(ok.success);
        assert_eq!(
            ok.data.unwrap().get(),
            r#"{"token":"abc123","expires":3600}"#
        );
        assert_eq!(ok.headers["X-Processing-Time-Ms"], "23");
        let failed = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (failed.success, failed.error.as_str()),
            (false, "Invalid user credentials")
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn garbage_is_a_typed_error_and_the_stream_goes_on() {
        let mut codec = FrameCodec::new(64);
        let long = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(100));
        let mut buf = BytesMut::from(
            format!(
                "{{not json\n{long}\n{{\"type\":\"launch\",\"request_id\":\"a\",\"success\":true}}\n\
                 {{\"type\":\"ping\",\"request_id\":\"p\",\"success\":true}}\n{{\"type\":"
            )
            .as_str(),
        );
        assert!(matches!(
            codec.decode(&mut buf),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            codec.decode(&mut buf).unwrap_err(),
            WireError::TooLong { max: 64 }
        );
        assert!(
            matches!(codec.decode(&mut buf), Err(WireError::Malformed(e)) if e.contains("launch"))
        );
        let ping = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (ping.kind, ping.request_id.as_str()),
            (MessageType::Ping, "p")
        );
        assert!(
            codec.decode(&mut buf).unwrap().is_none(),
            "half a line waits"
        );
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap_err(),
            WireError::Truncated
        );
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn the_plugin_side_reads_messages_and_writes_replies() {
        let mut plugin = PluginCodec::default();
        let mut buf = BytesMut::from(
            "\r\n{\"type\":\"execute\",\"request_id\":\"r1\",\"data\":[1,2],\"timeout_ms\":250}\r\n",
        );
        let message = plugin.decode(&mut buf).unwrap().unwrap();
        assert_eq!(message.timeout(), Some(Duration::from_millis(250)));
        let mut out = BytesMut::new();
        plugin
            .encode(Reply::ok(&message, Some(raw("3"))), &mut out)
            .unwrap();
        let reply = FrameCodec::default().decode(&mut out).unwrap().unwrap();
        assert_eq!(
            (reply.request_id.as_str(), reply.data.unwrap().get()),
            ("r1", "3")
        );
    }
}
