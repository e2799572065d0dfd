//! The `unix` transport: calls a plugin listening on a unix socket with the line protocol of
//! [`crate::wire`], as a tower `Service<PluginRequest>`.
//!
//! As the protocol's own client does, each call takes a connection of its own from a pool for
//! the length of one exchange (a message, then its reply): at most `max_connections` at once,
//! further calls waiting for one to come back. A connection comes back only after a clean
//! exchange; one that timed out, broke, or answered out of turn (another request id, garbage)
//! is dropped, so a late reply can never reach the next caller. Idle connections are dropped
//! after `idle_timeout`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use switchyard_core::sync::lock;
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tower::{BoxError, Service};

use crate::context::{PluginRequest, PluginResponse, new_request_id};
use crate::info::{Health, HealthStatus, PluginInfo};
use crate::wire::{DEFAULT_MAX_LINE_BYTES, FrameCodec, Message, MessageType, Reply, WireError};

/// Where and how to reach a unix-socket plugin.
#[derive(Debug, Clone)]
pub struct UnixConfig {
    /// The socket's path.
    pub path: PathBuf,
    /// The most connections open at once (calls beyond wait). Default 10.
    pub max_connections: usize,
    /// How long an unused connection is kept. Default 90 s.
    pub idle_timeout: Duration,
    /// The longest reply line read. Default 16 MiB.
    pub max_line_bytes: usize,
}

impl UnixConfig {
    /// The defaults, for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_connections: 10,
            idle_timeout: Duration::from_secs(90),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Why a call over a unix socket failed. The transport stays usable after each.
#[derive(Debug)]
pub enum UnixError {
    /// The socket could not be reached.
    Connect(std::io::Error),
    /// The plugin closed the connection before replying.
    Closed,
    /// The call's deadline (its context's `timeout`) passed first.
    TimedOut(Duration),
    /// The reply on the wire was not a reply (too long, malformed, cut short).
    Wire(WireError),
    /// A reply answered another request.
    WrongRequestId {
        /// The id sent.
        expected: String,
        /// The id received.
        got: String,
    },
    /// The plugin answered `success: false`.
    PluginFailed {
        /// Its `error`.
        message: String,
        /// Its `headers`.
        headers: BTreeMap<String, String>,
    },
}

impl fmt::Display for UnixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot reach the plugin's socket: {e}"),
            Self::Closed => f.write_str("the plugin closed the connection before replying"),
            Self::TimedOut(after) => write!(f, "the plugin did not reply within {after:?}"),
            Self::Wire(e) => write!(f, "the plugin's reply is unreadable: {e}"),
            Self::WrongRequestId { expected, got } => {
                write!(f, "the plugin replied to {got:?} when asked {expected:?}")
            }
            Self::PluginFailed { message, .. } => write!(f, "the plugin failed: {message}"),
        }
    }
}

impl std::error::Error for UnixError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            Self::Wire(e) => Some(e),
            _ => None,
        }
    }
}

type Connection = Framed<UnixStream, FrameCodec>;

struct Shared {
    config: UnixConfig,
    idle: Mutex<Vec<(Connection, Instant)>>,
    permits: Arc<Semaphore>,
}

/// A unix-socket plugin, as a `Service<PluginRequest>`; clones share the pool.
#[derive(Clone)]
pub struct UnixTransport {
    shared: Arc<Shared>,
}

impl fmt::Debug for UnixTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixTransport")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl UnixTransport {
    /// A transport to the plugin `config` names; nothing connects until the first call.
    pub fn new(config: UnixConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Self {
            shared: Arc::new(Shared {
                config,
                idle: Mutex::new(Vec::new()),
                permits,
            }),
        }
    }

    /// Sends `message` on a pooled connection and returns its reply, checked to answer it.
    ///
    /// # Errors
    ///
    /// Every [`UnixError`] but `PluginFailed`, which callers read from the reply.
    pub async fn exchange(&self, message: Message) -> Result<Reply, UnixError> {
        let _permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut connection = match self.idle_connection() {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let expected = message.request_id.clone();
        let deadline = message.timeout();
        let exchange = async {
            connection.send(message).await.map_err(|e| match e {
                WireError::Io(_) => UnixError::Closed,
                e => UnixError::Wire(e),
            })?;
            match connection.next().await {
                Some(Ok(reply)) => Ok(reply),
                Some(Err(e)) => Err(UnixError::Wire(e)),
                None => Err(UnixError::Closed),
            }
        };
        let reply = match deadline {
            Some(after) => tokio::time::timeout(after, exchange)
                .await
                .map_err(|_| UnixError::TimedOut(after))??,
            None => exchange.await?,
        };
        if reply.request_id != expected {
            return Err(UnixError::WrongRequestId {
                expected,
                got: reply.request_id,
            });
        }
        // A clean exchange: the connection may serve the next caller.
        lock(&self.shared.idle).push((connection, Instant::now()));
        Ok(reply)
    }

    /// The plugin's health: its `health` reply, `Offline` when it cannot be asked.
    pub async fn health(&self) -> HealthStatus {
        let started = Instant::now();
        let message = Message::control(MessageType::Health, new_request_id());
        match self.exchange(message).await {
            Ok(reply) if reply.success => reply
                .data
                .and_then(|data| serde_json::from_str::<HealthStatus>(data.get()).ok())
                .unwrap_or_else(|| HealthStatus::now(Health::Healthy, "", started.elapsed())),
            Ok(reply) => HealthStatus::now(Health::Unhealthy, reply.error, started.elapsed()),
            Err(e) => HealthStatus::now(Health::Offline, e.to_string(), started.elapsed()),
        }
    }

    /// The plugin's info, from its `info` reply.
    ///
    /// # Errors
    ///
    /// The exchange failed, the plugin failed, or its data is not a plugin info.
    pub async fn info(&self) -> Result<PluginInfo, BoxError> {
        let reply = self
            .exchange(Message::control(MessageType::Info, new_request_id()))
            .await?;
        let data = succeeded(reply)?.0;
        Ok(serde_json::from_str(data.get())?)
    }

    fn idle_connection(&self) -> Option<Connection> {
        let mut idle = lock(&self.shared.idle);
        let now = Instant::now();
        // Stale ones go; the freshest is reused.
        idle.retain(|(_, since)| now.duration_since(*since) < self.shared.config.idle_timeout);
        idle.pop().map(|(connection, _)| connection)
    }

    async fn connect(&self) -> Result<Connection, UnixError> {
        let stream = UnixStream::connect(&self.shared.config.path)
            .await
            .map_err(UnixError::Connect)?;
        Ok(Framed::new(
            stream,
            FrameCodec::new(self.shared.config.max_line_bytes),
        ))
    }
}

/// A reply's data and headers, or its failure as [`UnixError::PluginFailed`].
fn succeeded(
    reply: Reply,
) -> Result<(Box<serde_json::value::RawValue>, BTreeMap<String, String>), UnixError> {
    reply
        .into_outcome()
        .map_err(|(message, headers)| UnixError::PluginFailed { message, headers })
}

impl Service<PluginRequest> for UnixTransport {
    type Response = PluginResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PluginResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool's bound is awaited in the call, as the protocol's client waits.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: PluginRequest) -> Self::Future {
        request.ctx.ensure_request_id();
        let transport = self.clone();
        Box::pin(async move {
            let reply = transport.exchange(Message::execute(&request)).await?;
            let (data, metadata) = succeeded(reply)?;
            Ok(PluginResponse { data, metadata })
        })
    }
}
