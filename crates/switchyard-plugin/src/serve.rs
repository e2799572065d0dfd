//! The plugin's side of the line protocol: any tower `Service<PluginRequest>` served on a unix
//! socket ([`unix`]) or on stdin/stdout for the exec transport ([`stdio`]), with graceful
//! shutdown. A Rust plugin is a few lines:
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use switchyard_plugin::{PluginRequest, PluginResponse, serve};
//! use tower::{BoxError, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let echo = service_fn(|request: PluginRequest| async move {
//!     Ok::<_, BoxError>(PluginResponse { data: request.data, metadata: BTreeMap::new() })
//! });
//! serve::stdio(echo, std::future::pending()).await
//! # }
//! ```
//!
//! Messages are answered concurrently, each reply written whole as soon as it is ready (so
//! replies may leave out of order, matched by their `request_id`). `execute` calls the service
//! with the message's id, headers and deadline as its context (a call past its deadline is
//! answered with a failure); `health` answers healthy; `info` answers the [`Served`] info;
//! `ping` answers empty. A line that cannot be read is logged and skipped: with no id, it
//! cannot be answered.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tower::{BoxError, Service, ServiceExt};

use crate::context::{ExecutionContext, PluginRequest, PluginResponse};
use crate::info::{Health, HealthStatus, PluginInfo};
use crate::wire::{DEFAULT_MAX_LINE_BYTES, Message, MessageType, PluginCodec, Reply};

/// A service made a plugin, with what it says of itself.
#[derive(Debug, Clone)]
pub struct Served<S> {
    service: S,
    info: Arc<PluginInfo>,
    max_line_bytes: usize,
}

impl<S> Served<S>
where
    S: Service<PluginRequest, Response = PluginResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    /// `service` as a plugin, answering `info` with an empty name.
    pub fn new(service: S) -> Self {
        Self {
            service,
            info: Arc::new(PluginInfo::default()),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Answers `info` with `info`.
    #[must_use]
    pub fn info(mut self, info: PluginInfo) -> Self {
        self.info = Arc::new(info);
        self
    }

    /// Serves the messages read from `reader`, writing replies to `writer`, until the reader
    /// ends or `shutdown` resolves; then waits for the replies in flight.
    ///
    /// # Errors
    ///
    /// Writing a reply failed.
    pub async fn io<R, W>(
        self,
        reader: R,
        writer: W,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut messages = FramedRead::new(reader, PluginCodec::new(self.max_line_bytes));
        let (replies, mut outbox) = mpsc::channel::<Reply>(64);
        let writing = tokio::spawn(async move {
            let mut writer = FramedWrite::new(writer, PluginCodec::default());
            while let Some(reply) = outbox.recv().await {
                writer
                    .send(reply)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = &mut shutdown => None,
            };
            match message {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(target: "switchyard_plugin", %error, "unreadable message skipped");
                }
                Some(Ok(message)) => {
                    let (served, replies) = (self.clone(), replies.clone());
                    tokio::spawn(async move {
                        let _ = replies.send(served.answer(message).await).await;
                    });
                }
            }
        }
        drop(replies);
        writing.await.map_err(std::io::Error::other)?
    }

    /// Serves every connection to a unix socket bound at `path` until `shutdown` resolves.
    ///
    /// # Errors
    ///
    /// The socket cannot be bound.
    pub async fn unix(
        self,
        path: impl AsRef<Path>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let listener = tokio::net::UnixListener::bind(path)?;
        let mut shutdown = std::pin::pin!(shutdown);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(target: "switchyard_plugin", %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let served = self.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let (reader, writer) = stream.into_split();
                let stop = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                if let Err(error) = served.io(reader, writer, stop).await {
                    tracing::debug!(target: "switchyard_plugin", %error, "connection ended");
                }
            });
        }
        let _ = stop.send(true);
        Ok(())
    }

    async fn answer(self, message: Message) -> Reply {
        match message.kind {
            MessageType::Execute => self.execute(message).await,
            MessageType::Health => {
                let health = HealthStatus::now(Health::Healthy, "", Duration::ZERO);
                Reply::ok(&message, serde_json::value::to_raw_value(&health).ok())
            }
            MessageType::Info => {
                Reply::ok(&message, serde_json::value::to_raw_value(&*self.info).ok())
            }
            MessageType::Ping => Reply::ok(&message, None),
        }
    }

    async fn execute(self, message: Message) -> Reply {
        let Some(data) = message.data.clone() else {
            return Reply::failed(&message, "an execute message carries data");
        };
        let ctx = ExecutionContext {
            request_id: message.request_id.clone(),
            timeout: message.timeout(),
            headers: message.headers.clone(),
            ..ExecutionContext::default()
        };
        let call = self.service.clone().oneshot(PluginRequest { ctx, data });
        let result = match message.timeout() {
            Some(after) => match tokio::time::timeout(after, call).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("the call did not finish within {after:?}").into()),
            },
            None => call.await.map_err(Into::into),
        };
        match result {
            Ok(response) => {
                let mut reply = Reply::ok(&message, Some(response.data));
                reply.headers = response.metadata;
                reply
            }
            Err(error) => Reply::failed(&message, error.to_string()),
        }
    }
}

/// Serves `service` on a unix socket at `path` until `shutdown` resolves ([`Served::unix`]).
///
/// # Errors
///
/// The socket cannot be bound.
pub async fn unix<S>(
    path: impl AsRef<Path>,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<PluginRequest, Response = PluginResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    Served::new(service).unix(path, shutdown).await
}

/// Serves `service` on stdin and stdout, for the exec transport, until stdin ends or
/// `shutdown` resolves ([`Served::io`]).
///
/// # Errors
///
/// Writing to stdout failed.
pub async fn stdio<S>(service: S, shutdown: impl Future<Output = ()>) -> std::io::Result<()>
where
    S: Service<PluginRequest, Response = PluginResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    Served::new(service)
        .io(tokio::io::stdin(), tokio::io::stdout(), shutdown)
        .await
}
