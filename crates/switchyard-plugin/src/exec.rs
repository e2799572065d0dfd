//! The `exec` transport: runs a plugin as a long-lived child process and speaks the line
//! protocol of [`crate::wire`] over its stdin and stdout, many calls at once, each reply
//! matched to its call by `request_id`.
//!
//! The child's stderr goes to the log (target `switchyard_plugin`, level warn). A reply whose
//! id matches no waiting call is logged and dropped — never delivered to another caller. When
//! the child exits, every call in flight fails with [`ExecError::Exited`], and the next call
//! starts it again, no sooner than `restart_backoff` after the last start (doubling up to
//! `max_restart_backoff` while it keeps dying young). [`ExecTransport::close`] closes stdin,
//! waits `close_grace`, then kills; dropping the last handle kills the child.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use switchyard_core::sync::lock;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tower::{BoxError, Service};

use crate::context::{PluginRequest, PluginResponse};
use crate::wire::{DEFAULT_MAX_LINE_BYTES, FrameCodec, Message, Reply, WireError};

/// How to run an exec plugin.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// The program.
    pub executable: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables set for it (on top of this process's).
    pub env: Vec<(String, String)>,
    /// Its working directory; this process's when unset.
    pub work_dir: Option<PathBuf>,
    /// The longest reply line read. Default 16 MiB.
    pub max_line_bytes: usize,
    /// The least time between two starts. Default 100 ms.
    pub restart_backoff: Duration,
    /// The most, while the child keeps exiting soon after starting. Default 10 s.
    pub max_restart_backoff: Duration,
    /// How long [`ExecTransport::close`] waits after closing stdin. Default 5 s.
    pub close_grace: Duration,
}

impl ExecConfig {
    /// The defaults, for `executable`.
    pub fn new(executable: impl Into<PathBuf>) -> Self {
        Self {
            executable: executable.into(),
            args: Vec::new(),
            env: Vec::new(),
            work_dir: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            restart_backoff: Duration::from_millis(100),
            max_restart_backoff: Duration::from_secs(10),
            close_grace: Duration::from_secs(5),
        }
    }

    /// The config with `args`.
    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
}

/// Why a call to an exec plugin failed. The transport stays usable after each.
#[derive(Debug)]
pub enum ExecError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// The child exited (or closed its stdout) before replying.
    Exited,
    /// The call's deadline (its context's `timeout`) passed first.
    TimedOut(Duration),
    /// The message could not be written to the child.
    Write(WireError),
    /// The plugin answered `success: false`.
    PluginFailed {
        /// Its `error`.
        message: String,
    },
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start the plugin: {e}"),
            Self::Exited => f.write_str("the plugin exited before replying"),
            Self::TimedOut(after) => write!(f, "the plugin did not reply within {after:?}"),
            Self::Write(e) => write!(f, "cannot write to the plugin: {e}"),
            Self::PluginFailed { message } => write!(f, "the plugin failed: {message}"),
        }
    }
}

impl std::error::Error for ExecError {}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;

/// A started child: its stdin, its waiting calls, and the process.
struct Running {
    stdin: Arc<tokio::sync::Mutex<FramedWrite<ChildStdin, FrameCodec>>>,
    pending: Pending,
    child: Arc<tokio::sync::Mutex<Child>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

struct State {
    running: Option<Running>,
    last_start: Option<Instant>,
    backoff: Duration,
}

struct Shared {
    config: ExecConfig,
    state: tokio::sync::Mutex<State>,
}

/// An exec plugin, as a `Service<PluginRequest>`; clones share the child.
#[derive(Clone)]
pub struct ExecTransport {
    shared: Arc<Shared>,
}

impl fmt::Debug for ExecTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecTransport")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl ExecTransport {
    /// A transport running the plugin `config` names; it starts on the first call.
    pub fn new(config: ExecConfig) -> Self {
        let backoff = config.restart_backoff;
        Self {
            shared: Arc::new(Shared {
                config,
                state: tokio::sync::Mutex::new(State {
                    running: None,
                    last_start: None,
                    backoff,
                }),
            }),
        }
    }

    /// Sends `message` to the child (starting it if need be) and waits for its reply.
    ///
    /// # Errors
    ///
    /// Every [`ExecError`] but `PluginFailed`, which callers read from the reply.
    pub async fn exchange(&self, message: Message) -> Result<Reply, ExecError> {
        let (stdin, pending, alive) = self.running().await?;
        let id = message.request_id.clone();
        let (tx, rx) = oneshot::channel();
        lock(&pending).insert(id.clone(), tx);
        if !alive.load(std::sync::atomic::Ordering::SeqCst) {
            // The child ended between the lookup and the insert.
            lock(&pending).remove(&id);
            return Err(ExecError::Exited);
        }
        let deadline = message.timeout();
        let sent = stdin.lock().await.send(message).await;
        if let Err(e) = sent {
            lock(&pending).remove(&id);
            alive.store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(ExecError::Write(e));
        }
        let reply = async { rx.await.map_err(|_| ExecError::Exited) };
        let result = match deadline {
            Some(after) => tokio::time::timeout(after, reply)
                .await
                .unwrap_or(Err(ExecError::TimedOut(after))),
            None => reply.await,
        };
        if result.is_err() {
            lock(&pending).remove(&id);
        }
        result
    }

    /// Closes the child's stdin, waits up to `close_grace` for it to exit, then kills it.
    pub async fn close(&self) {
        let running = self.shared.state.lock().await.running.take();
        if let Some(running) = running {
            drop(running.stdin);
            let mut child = running.child.lock().await;
            if tokio::time::timeout(self.shared.config.close_grace, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// The running child's handles, starting it (after the backoff) when there is none.
    #[allow(clippy::type_complexity)]
    async fn running(
        &self,
    ) -> Result<
        (
            Arc<tokio::sync::Mutex<FramedWrite<ChildStdin, FrameCodec>>>,
            Pending,
            Arc<std::sync::atomic::AtomicBool>,
        ),
        ExecError,
    > {
        let mut state = self.shared.state.lock().await;
        if let Some(running) = &state.running
            && running.alive.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok((
                Arc::clone(&running.stdin),
                Arc::clone(&running.pending),
                Arc::clone(&running.alive),
            ));
        }
        let config = &self.shared.config;
        if let Some(last) = state.last_start {
            // Died young: wait out the backoff, and double it for next time.
            let ready_at = last + state.backoff;
            if Instant::now() < ready_at {
                tokio::time::sleep_until(ready_at).await;
                state.backoff = (state.backoff * 2).min(config.max_restart_backoff);
            } else {
                state.backoff = config.restart_backoff;
            }
        }
        state.last_start = Some(Instant::now());
        let running = spawn(config)?;
        let handles = (
            Arc::clone(&running.stdin),
            Arc::clone(&running.pending),
            Arc::clone(&running.alive),
        );
        state.running = Some(running);
        Ok(handles)
    }
}

fn spawn(config: &ExecConfig) -> Result<Running, ExecError> {
    let mut command = Command::new(&config.executable);
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &config.work_dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(ExecError::Spawn)?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let pending: Pending = Arc::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let program = config.executable.display().to_string();
    tokio::spawn(read_replies(
        FramedRead::new(stdout, FrameCodec::new(config.max_line_bytes)),
        Arc::clone(&pending),
        Arc::clone(&alive),
        program.clone(),
    ));
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(target: "switchyard_plugin", plugin = %program, "{line}");
        }
    });
    Ok(Running {
        stdin: Arc::new(tokio::sync::Mutex::new(FramedWrite::new(
            stdin,
            FrameCodec::new(config.max_line_bytes),
        ))),
        pending,
        child: Arc::new(tokio::sync::Mutex::new(child)),
        alive,
    })
}

/// Hands each reply to the call waiting for its id; at the end of stdout, fails them all.
async fn read_replies(
    mut replies: FramedRead<tokio::process::ChildStdout, FrameCodec>,
    pending: Pending,
    alive: Arc<std::sync::atomic::AtomicBool>,
    program: String,
) {
    while let Some(item) = replies.next().await {
        match item {
            Ok(reply) => {
                let waiting = lock(&pending).remove(&reply.request_id);
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    None => tracing::warn!(
                        target: "switchyard_plugin",
                        plugin = %program,
                        request_id = %reply.request_id,
                        "a reply no call waits for; dropped"
                    ),
                }
            }
            Err(error) => {
                tracing::warn!(target: "switchyard_plugin", plugin = %program, %error, "unreadable reply");
            }
        }
    }
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    // Dropping the senders fails every waiting call with `Exited`.
    lock(&pending).clear();
}

impl Service<PluginRequest> for ExecTransport {
    type Response = PluginResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PluginResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: PluginRequest) -> Self::Future {
        request.ctx.ensure_request_id();
        let transport = self.clone();
        Box::pin(async move {
            let reply = transport.exchange(Message::execute(&request)).await?;
            let (data, metadata) = reply
                .into_outcome()
                .map_err(|(message, _)| ExecError::PluginFailed { message })?;
            Ok(PluginResponse { data, metadata })
        })
    }
}
