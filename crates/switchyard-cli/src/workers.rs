//! How `serve` spreads connections over the machine's cores: one single-threaded runtime per
//! core, each with its own listening socket on the gateway's address, or the caller's
//! work-stealing runtime behind one socket.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::BoxError;

use crate::tls::{ServerTls, serve_tls};

/// How the gateway's connections are spread over threads (`switchyard serve --workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// `n` threads, each running its own single-threaded runtime and accepting on its own
    /// socket bound to the gateway's address (`SO_REUSEPORT`), so the kernel spreads new
    /// connections and a request is served start to end on one thread, with no hand-off
    /// between threads. nginx's and Envoy's model; the fastest under load.
    ///
    /// A handler that blocks its thread (synchronous work in a `local` service) stalls the
    /// connections of that thread only, until it returns: use [`Shared`](Self::Shared) for
    /// such handlers. Unix only; elsewhere it serves as `Shared`.
    PerCore(NonZeroUsize),
    /// The runtime `serve` is called on serves every connection behind one socket, its
    /// scheduler moving work between threads: a blocked thread delays less, each request
    /// costs more.
    Shared,
}

impl Workers {
    /// One thread per core of this machine (as the OS reports it), one if unknown.
    pub fn per_core() -> Self {
        Self::PerCore(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }
}

impl Default for Workers {
    /// [`Workers::per_core`].
    fn default() -> Self {
        Self::per_core()
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PerCore(n) => write!(f, "{n}"),
            Self::Shared => f.write_str("shared"),
        }
    }
}

/// `--workers` takes a count of per-core threads, or `shared`.
impl FromStr for Workers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "shared" {
            return Ok(Self::Shared);
        }
        match text.parse::<usize>() {
            Ok(n) => NonZeroUsize::new(n)
                .map(Self::PerCore)
                .ok_or_else(|| "must be at least 1 (or `shared`)".to_owned()),
            Err(_) => Err(format!(
                "expected a number of threads or `shared`, not {text:?}"
            )),
        }
    }
}

/// What each serving loop needs: the app, TLS when serving HTTPS, the grace period.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) app: axum::Router,
    pub(crate) tls: Option<Arc<ServerTls>>,
    pub(crate) grace: Duration,
}

/// Binds `addr` once per worker (the first socket chooses the port when `addr`'s is 0, the
/// others join it).
///
/// Sockets sharing a port must all ask to (`SO_REUSEPORT`), and the kernel then lets any
/// process of the same user join them: so a port something already listens on is refused
/// first, as a plain bind would be, instead of silently splitting its connections.
pub(crate) fn bind(addr: SocketAddr, workers: Workers) -> std::io::Result<Vec<TcpListener>> {
    let count = match workers {
        Workers::PerCore(n) if cfg!(unix) => n.get(),
        _ => {
            return Ok(vec![
                std::net::TcpListener::bind(addr).and_then(tokio_listener)?,
            ]);
        }
    };
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn tokio_listener(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Serves on every listener until `shutdown` resolves (or a worker stops on its own, which
/// stops the others), then lets each finish its requests in flight for the grace period.
/// Per core, each listener gets a thread and runtime of its own; shared, the one listener is
/// served on the current runtime.
pub(crate) async fn run(
    workers: Workers,
    listeners: Vec<TcpListener>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let (stop, stopping) = watch::channel(false);
    let mut done = Vec::with_capacity(listeners.len());
    let per_core = matches!(workers, Workers::PerCore(_)) && cfg!(unix);
    if !per_core {
        let listener = listeners.into_iter().next().expect("one listener");
        let (tx, rx) = oneshot::channel();
        let serving = serving.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _ = tx.send(serve_one(listener, serving, stopping).await);
        });
        done.push(rx);
    } else {
        for (i, listener) in listeners.into_iter().enumerate() {
            // A listener is registered with the runtime that made it: move the socket over.
            let listener = listener.into_std()?;
            let (tx, rx) = oneshot::channel();
            let serving = serving.clone();
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || {
                    let result = worker(listener, serving, stopping);
                    let _ = tx.send(result);
                })?;
            done.push(rx);
        }
    }
    drop(stopping);
    let mut finished = futures::future::select_all(done);
    tokio::select! {
        () = shutdown => {}
        (result, _, _) = &mut finished => {
            // Stopping before being told to is a failure, whatever it says.
            let _ = stop.send(true);
            let error = match result {
                Ok(Err(error)) => error,
                _ => "a worker thread stopped unexpectedly".into(),
            };
            return Err(error);
        }
    }
    let _ = stop.send(true);
    let mut first_error = None;
    for rx in finished.into_inner() {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => first_error = first_error.or(Some(error)),
            Err(_) => first_error = first_error.or(Some("a worker thread panicked".into())),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One worker thread: its own runtime, serving `listener`.
fn worker(
    listener: std::net::TcpListener,
    serving: Serving,
    stopping: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move { serve_one(tokio_listener(listener)?, serving, stopping).await })
}

/// One listener's loop, plain or TLS, until `stopping` turns true.
async fn serve_one(
    listener: TcpListener,
    serving: Serving,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let stop = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    if let Some(tls) = serving.tls {
        return serve_tls(listener, tls, serving.app, stop, serving.grace).await;
    }
    // Graceful: on the signal, stop accepting and let in-flight requests finish, for at most
    // the grace period.
    let (stopped_tx, mut stopped) = watch::channel(false);
    let server = axum::serve(listener, serving.app).with_graceful_shutdown(async move {
        stop.await;
        let _ = stopped_tx.send(true);
    });
    let grace = async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(serving.grace).await;
    };
    tokio::select! {
        result = server.into_future() => result?,
        () = grace => tracing::warn!(
            grace = ?serving.grace,
            "requests still in flight after the grace period; stopping anyway"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_count_or_shared() {
        assert_eq!("shared".parse::<Workers>(), Ok(Workers::Shared));
        assert_eq!(
            "3".parse::<Workers>(),
            Ok(Workers::PerCore(NonZeroUsize::new(3).unwrap()))
        );
        assert_eq!(
            "0".parse::<Workers>().unwrap_err(),
            "must be at least 1 (or `shared`)"
        );
        assert!("many".parse::<Workers>().unwrap_err().contains("\"many\""));
        assert_eq!(Workers::Shared.to_string(), "shared");
        assert_eq!(Workers::PerCore(NonZeroUsize::MIN).to_string(), "1");
    }

    #[tokio::test]
    async fn per_core_sockets_share_one_port_chosen_by_the_first() {
        let two = Workers::PerCore(NonZeroUsize::new(2).unwrap());
        let listeners = bind("127.0.0.1:0".parse().unwrap(), two).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        if cfg!(unix) {
            assert_eq!(ports.len(), 2);
            assert_ne!(ports[0], 0);
            assert_eq!(ports[0], ports[1]);
        } else {
            assert_eq!(ports.len(), 1);
        }
        let shared = bind("127.0.0.1:0".parse().unwrap(), Workers::Shared).unwrap();
        assert_eq!(shared.len(), 1);
    }
}
