//! `switchyard serve`: open the routes file, reload and watch it, serve the gateway, stop
//! gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard_router::SqliteSource;
use tower::BoxError;

use crate::demo::{builtin_router, seed_rows};
use crate::gateway::{Gateway, app};
use crate::metrics::prometheus;
use crate::tls::{ServerTls, ServerTlsFiles};
use crate::workers::{Serving, Workers, bind, run};

/// The settings of `switchyard serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The routes database (created with its schema and seed rows if missing).
    pub db: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// How often to poll the database for changes.
    pub poll_interval: Duration,
    /// Whether the `http` transport may call internal addresses.
    pub allow_internal: bool,
    /// Enables the admin API with this bearer token.
    pub admin_token: Option<String>,
    /// The request body limit.
    pub max_body_bytes: usize,
    /// Serve HTTPS with these files (reloaded when they change, checked every
    /// `poll_interval`); plain HTTP when unset.
    pub tls: Option<ServerTlsFiles>,
    /// How connections are spread over threads.
    pub workers: Workers,
}

/// Runs the gateway until `shutdown` resolves, then stops accepting connections and waits for
/// in-flight requests. `ready` is told the bound address once the server accepts connections.
///
/// # Errors
///
/// The database cannot be opened or seeded, the address cannot be bound, or the TLS files do
/// not load.
pub async fn serve(
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    // The TLS files first: a bad pair is a usage error, reported before anything starts.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(ServerTls::load(files.clone())?)),
        None => None,
    };
    // The recorder first: metric handles made before it is installed stay no-ops for good.
    let metrics = prometheus();
    let db = config.db.clone();
    let interval = config.poll_interval;
    let (source, admin) = tokio::task::spawn_blocking(move || {
        let source = SqliteSource::open(&db)?.poll_interval(interval);
        let admin = source.admin()?;
        Ok::<_, switchyard_router::SourceError>((source, admin))
    })
    .await??;
    if source.created() {
        for row in seed_rows() {
            admin.upsert(row).await?;
        }
        tracing::info!(db = %config.db.display(), "created a new routes database with routes echo and billing");
    }
    let router = builtin_router(config.allow_internal);
    let report = router.reload_from(&source).await?;
    tracing::info!(
        routes = report.added,
        broken = report.broken,
        "routes loaded"
    );
    let watcher = router.watch(source);

    let upkeep = metrics.clone().map(|handle| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    });
    let mut gateway = Gateway::new(router).with_max_body_bytes(config.max_body_bytes);
    if let Some(handle) = metrics {
        gateway = gateway.with_metrics(handle);
    }
    if let Some(token) = config.admin_token.filter(|t| !t.is_empty()) {
        gateway = gateway.with_admin(admin, token);
    }
    let reloads = tls.as_ref().map(|tls| {
        gateway = gateway.clone().with_tls(Arc::clone(tls));
        let tls = Arc::clone(tls);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let tls = Arc::clone(&tls);
                // Reading files blocks: off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            }
        })
    });

    let listeners = bind(config.listen, config.workers)?;
    let addr = listeners[0].local_addr()?;
    tracing::info!(%addr, https = tls.is_some(), workers = %config.workers, "listening");
    ready(addr);
    let serving = Serving {
        app: app(gateway),
        tls,
        grace: SHUTDOWN_GRACE,
    };
    let result = run(config.workers, listeners, serving, shutdown).await;
    watcher.stop();
    for task in [upkeep, reloads].into_iter().flatten() {
        task.abort();
    }
    tracing::info!("stopped");
    result
}

/// How long a stopping server waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
