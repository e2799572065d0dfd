//! Plugins as tower services: a plugin takes a [`PluginRequest`] (an [`ExecutionContext`] and raw
//! JSON data) and answers a [`PluginResponse`]; it reports a [`PluginInfo`] and a
//! [`HealthStatus`]. This crate holds that model and the wire formats plugins speak in other
//! processes.
//!
//! Built so far: the model, the typed front [`Plugin`] (`Req` in, `Resp` out, over any raw
//! plugin service), Go-compatible durations ([`go_duration`]), and the newline-delimited JSON
//! of unix-socket and stdio plugins ([`wire`]) as a pure codec, the [`unix`] and [`exec`]
//! transports, and the plugin side of both ([`serve`]). The http and grpc transports and the
//! config are not built yet.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use switchyard_plugin::wire::{FrameCodec, Message, PluginCodec, Reply};
//! use switchyard_plugin::PluginRequest;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! // The caller writes an execute message...
//! let request = PluginRequest::new(r#"{"user_id": "u1"}"#)?;
//! let mut wire = BytesMut::new();
//! FrameCodec::default().encode(Message::execute(&request), &mut wire)?;
//!
//! // ...the plugin reads it and answers on the same id...
//! let mut plugin = PluginCodec::default();
//! let message = plugin.decode(&mut wire)?.expect("one line");
//! let mut back = BytesMut::new();
//! plugin.encode(Reply::ok(&message, message.data.clone()), &mut back)?;
//!
//! // ...and the caller reads the reply.
//! let reply = FrameCodec::default().decode(&mut back)?.expect("one line");
//! assert_eq!(reply.request_id, request.ctx.request_id);
//! assert_eq!(reply.data.expect("data").get(), r#"{"user_id": "u1"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod exec;
pub mod go_duration;
pub mod serve;
pub mod unix;
pub mod wire;

mod context;
mod info;
mod typed;

pub use context::{ExecutionContext, PluginRequest, PluginResponse};
pub use info::{Health, HealthStatus, PluginInfo};
pub use typed::{CodecError, Plugin, PluginFuture, PluginLayer};

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
