//! The four interaction patterns as tower `Service` shapes, and the resilience stack
//! each gets from a [`ResilienceConfig`].
//!
//! | pattern | service shape | resilience |
//! | --- | --- | --- |
//! | request-response | `Service<Req, Response = Res>` | the whole stack: rate limit → bulkhead → circuit breaker → retry, timeouts |
//! | stream | `Service<Req, Response = impl Stream<Item = ...>>`: the call opens the stream | the whole stack, on **opening** the stream only: items are not rate-limited, retried or timed one by one, and the bulkhead slot is held while opening |
//! | sink | `Service<Req, Response = ()>` (or an ack type) | the whole stack |
//! | duplex | `Service<Req, Response = DuplexChannel<I, O>>`: the call opens a bidirectional channel | rate limit and circuit breaker on opening, timeouts; **no retry** (a persistent connection reconnects at a higher level) and no bulkhead slot for the channel's life |
//!
//! Each function below builds a [`ResilienceLayer`] with its pattern's rules
//! (switchyard-resilience's [`Pattern`] through [`ResilienceLayer::for_pattern`]); hand it to
//! [`Manager::initialize_with`](crate::Manager::initialize_with) or any `ServiceBuilder`.

use std::sync::Arc;

use switchyard_core::ConfigError;
pub use switchyard_resilience::Pattern;
use switchyard_resilience::{ResilienceConfig, ResilienceLayer};
use tokio::sync::mpsc;

/// The stack for a request-response provider: every layer `config` describes.
///
/// # Errors
///
/// A [`ConfigError`] naming the first bad field.
pub fn request_response(
    name: impl Into<Arc<str>>,
    config: &ResilienceConfig,
) -> Result<ResilienceLayer, ConfigError> {
    layer(Pattern::RequestResponse, name, config)
}

/// The stack for a stream provider: every layer, applied to the call that opens the stream
/// (the items flow past it).
///
/// # Errors
///
/// A [`ConfigError`] naming the first bad field.
pub fn stream(
    name: impl Into<Arc<str>>,
    config: &ResilienceConfig,
) -> Result<ResilienceLayer, ConfigError> {
    layer(Pattern::Stream, name, config)
}

/// The stack for a sink provider: every layer.
///
/// # Errors
///
/// A [`ConfigError`] naming the first bad field.
pub fn sink(
    name: impl Into<Arc<str>>,
    config: &ResilienceConfig,
) -> Result<ResilienceLayer, ConfigError> {
    layer(Pattern::Sink, name, config)
}

/// The stack for a duplex provider: rate limit, circuit breaker and timeouts on opening the
/// channel; `config`'s retry and bulkhead sections are left out.
///
/// # Errors
///
/// A [`ConfigError`] naming the first bad field (a left-out section is still validated).
pub fn duplex(
    name: impl Into<Arc<str>>,
    config: &ResilienceConfig,
) -> Result<ResilienceLayer, ConfigError> {
    layer(Pattern::Duplex, name, config)
}

/// The stack for `pattern`.
///
/// # Errors
///
/// A [`ConfigError`] naming the first bad field.
pub fn layer(
    pattern: Pattern,
    name: impl Into<Arc<str>>,
    config: &ResilienceConfig,
) -> Result<ResilienceLayer, ConfigError> {
    Ok(ResilienceLayer::new(name, config)?.for_pattern(pattern))
}

/// One end of a bidirectional channel (a duplex stream): what a duplex provider's
/// call answers. Dropping it closes the channel.
#[derive(Debug)]
pub struct DuplexChannel<I, O> {
    /// Sends to the other end.
    pub sender: mpsc::Sender<I>,
    /// Receives from the other end (`None` once it is closed).
    pub receiver: mpsc::Receiver<O>,
}

impl<I, O> DuplexChannel<I, O> {
    /// Two connected ends, each buffering `buffer` messages: for in-process duplex providers
    /// and tests.
    ///
    /// # Panics
    ///
    /// If `buffer` is 0 (as `tokio::sync::mpsc::channel`).
    pub fn pair(buffer: usize) -> (Self, DuplexChannel<O, I>) {
        let (to_remote, from_local) = mpsc::channel(buffer);
        let (to_local, from_remote) = mpsc::channel(buffer);
        (
            Self {
                sender: to_remote,
                receiver: from_remote,
            },
            DuplexChannel {
                sender: to_local,
                receiver: from_local,
            },
        )
    }

    /// Sends `item` to the other end.
    ///
    /// # Errors
    ///
    /// The item back, if the other end is gone.
    pub async fn send(&self, item: I) -> Result<(), mpsc::error::SendError<I>> {
        self.sender.send(item).await
    }

    /// The next item from the other end; `None` once it is closed (end of stream).
    pub async fn recv(&mut self) -> Option<O> {
        self.receiver.recv().await
    }
}
