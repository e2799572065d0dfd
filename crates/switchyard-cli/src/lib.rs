//! The `switchyard` binary's library: the HTTP gateway over a [`Router`], its status pages and
//! admin API, and the built-in demo services.
//!
//! `switchyard serve` is [`serve`]; integration tests and embedders build the same axum app
//! with [`app`].
//!
//! # Example
//!
//! ```
//! use switchyard_cli::{Gateway, builtin_router};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::new(builtin_router(false));
//! let response = switchyard_cli::app(gateway)
//!     .oneshot(
//!         axum::http::Request::post("/billing").body(axum::body::Body::from("$100"))?,
//!     )
//!     .await?;
//! assert_eq!(response.status(), 200);
//! let body = axum::body::to_bytes(response.into_body(), 1024).await?;
//! assert_eq!(body, "billed:$100");
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;
use switchyard_core::find_rejection;
use switchyard_router::{
    Admin, AdminError, GrpcTransport, HttpTransport, RouteRow, Router, ServiceInfo, SqliteSource,
};
use tower::{BoxError, ServiceExt, service_fn};

/// The largest request body the gateway reads by default (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// A router with the built-in demo services registered as local services:
///
/// - `echo` answers the request body;
/// - `billing` answers `billed:` followed by the body (the seed's example).
///
/// Remote strategies: `http` and `grpc`, both refusing internal targets unless
/// `allow_internal` is set.
pub fn builtin_router(allow_internal: bool) -> Router {
    let router = Router::new();
    if allow_internal {
        router.register_transport("http", HttpTransport::new().allow_internal(true));
        router.register_transport("grpc", GrpcTransport::new().allow_internal(true));
    }
    router.register_local(
        "echo",
        service_fn(|body: Bytes| async move { Ok::<_, BoxError>(body) }),
    );
    router.register_local(
        "billing",
        service_fn(|body: Bytes| async move {
            let mut billed = b"billed:".to_vec();
            billed.extend_from_slice(&body);
            Ok::<_, BoxError>(Bytes::from(billed))
        }),
    );
    router
}

/// The rows a new database starts with: `echo` and `billing`, both `local`.
pub fn seed_rows() -> Vec<RouteRow> {
    vec![
        RouteRow::new("echo", "local"),
        RouteRow::new("billing", "local"),
    ]
}

/// Everything the gateway's handlers share.
#[derive(Clone, Debug)]
pub struct Gateway {
    router: Router,
    admin: Option<(Admin, Arc<str>)>,
    metrics: Option<PrometheusHandle>,
    max_body_bytes: usize,
}

impl Gateway {
    /// A gateway over `router`, with no admin API and the default body limit.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            admin: None,
            metrics: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Enables the admin API under `/admin/routes`, writing through `admin` and requiring
    /// `Authorization: Bearer <token>`.
    #[must_use]
    pub fn with_admin(mut self, admin: Admin, token: impl Into<Arc<str>>) -> Self {
        self.admin = Some((admin, token.into()));
        self
    }

    /// Serves `/metrics` from `handle`.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Refuses request bodies longer than `bytes` with 413.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

/// The process-wide Prometheus recorder, installed on first use. `None` when another metrics
/// recorder was installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// The gateway's routes:
///
/// | route | answer |
/// | --- | --- |
/// | `POST /{service}` | the service's answer (200), 204 for a `noop` route, or a JSON error |
/// | `GET /healthz` | `ok` |
/// | `GET /metrics` | Prometheus text |
/// | `GET /status` | JSON: router status and every service |
/// | `GET /` | an HTML status page |
/// | `/admin/routes[/{service}]` | the admin API, when enabled |
pub fn app(gateway: Gateway) -> axum::Router {
    let mut app = axum::Router::new()
        .route("/", get(status_page))
        // These paths are also services' paths: POST still dispatches to a service so named.
        .route("/healthz", get(|| async { "ok\n" }).post(call_healthz))
        .route("/metrics", get(metrics_text).post(call_metrics))
        .route("/status", get(status_json).post(call_status))
        .route("/{service}", post(call_service));
    if gateway.admin.is_some() {
        app = app.route("/admin/routes", get(admin_list)).route(
            "/admin/routes/{service}",
            get(admin_get).put(admin_put).delete(admin_delete),
        );
    }
    app.with_state(gateway)
}

/// A JSON error body: `{"error":{"kind":..,"service":..,"message":..}}`.
fn error_response(
    status: StatusCode,
    kind: &str,
    service: Option<&str>,
    message: &str,
) -> Response {
    let body = json!({ "error": { "kind": kind, "service": service, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn call_error(service: &str, err: &BoxError) -> Response {
    match find_rejection(&**err) {
        Some(rejection) => {
            let kind = rejection.kind();
            // A panic message is the handler's internals: logged (by the router), not sent.
            let message = if kind == switchyard_core::RejectionKind::Panic {
                format!("the handler of {service} panicked; see the server log")
            } else {
                err.to_string()
            };
            let mut response =
                error_response(kind.http_status(), kind.as_str(), Some(service), &message);
            if let Some(after) = switchyard_core::rejection::retry_after_header(rejection) {
                response.headers_mut().insert(header::RETRY_AFTER, after);
            }
            response
        }
        None => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "handler_error",
            Some(service),
            &err.to_string(),
        ),
    }
}

async fn call_healthz(State(gateway): State<Gateway>, body: Body) -> Response {
    call(&gateway, "healthz", body).await
}

async fn call_metrics(State(gateway): State<Gateway>, body: Body) -> Response {
    call(&gateway, "metrics", body).await
}

async fn call_status(State(gateway): State<Gateway>, body: Body) -> Response {
    call(&gateway, "status", body).await
}

async fn call_service(
    State(gateway): State<Gateway>,
    Path(service): Path<String>,
    body: Body,
) -> Response {
    call(&gateway, &service, body).await
}

async fn call(gateway: &Gateway, service: &str, body: Body) -> Response {
    let route = match gateway.router.route(service) {
        Ok(route) => route,
        Err(err) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "service_not_found",
                Some(service),
                &err.to_string(),
            );
        }
    };
    let payload = match axum::body::to_bytes(body, gateway.max_body_bytes).await {
        Ok(payload) => payload,
        Err(err) => {
            let too_large =
                switchyard_core::find_cause::<http_body_util::LengthLimitError>(&err).is_some();
            return if too_large {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    Some(service),
                    &format!(
                        "request body is larger than {} bytes",
                        gateway.max_body_bytes
                    ),
                )
            } else {
                error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    Some(service),
                    &format!("could not read the request body: {err}"),
                )
            };
        }
    };
    let noop = route.is_noop();
    match route.oneshot(payload).await {
        Ok(_) if noop => StatusCode::NO_CONTENT.into_response(),
        Ok(answer) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        Err(err) => call_error(service, &err),
    }
}

async fn metrics_text(State(gateway): State<Gateway>) -> Response {
    match &gateway.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

async fn status_json(State(gateway): State<Gateway>) -> Response {
    axum::Json(json!({
        "router": gateway.router.status(),
        "services": gateway.router.services(),
    }))
    .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn status_page(State(gateway): State<Gateway>) -> Html<String> {
    let status = gateway.router.status();
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         .err{color:#b00}</style></head><body><h1>switchyard</h1>",
    );
    let _ = write!(
        page,
        "<p>{} routes, {} local-only services, {} broken.",
        status.routes, status.local_only, status.broken
    );
    if let Some(error) = &status.last_error {
        let _ = write!(
            page,
            " <span class=\"err\">Last reload failed: {}</span>",
            escape(error)
        );
    }
    page.push_str(
        "</p><table><tr><th>service</th><th>strategy</th><th>endpoint</th><th>local</th>\
         <th>breaker</th><th>error</th></tr>",
    );
    for ServiceInfo {
        name,
        strategy,
        endpoint,
        has_local,
        breaker,
        error,
        last_call_error,
        ..
    } in gateway.router.services()
    {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            escape(&name),
            escape(&strategy),
            escape(endpoint.as_deref().unwrap_or("")),
            if has_local { "yes" } else { "no" },
            breaker.map_or("", |b| b.as_str()),
            escape(error.or(last_call_error).as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table></body></html>\n");
    Html(page)
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy)]
enum Denied {
    /// No admin token is configured: the API does not exist.
    Disabled,
    /// The bearer token is missing or wrong.
    Unauthorized,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Self::Disabled => StatusCode::NOT_FOUND.into_response(),
            Self::Unauthorized => {
                let mut response = error_response(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    None,
                    "the admin API needs `Authorization: Bearer <token>`",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
    }
}

/// The admin handle, if the request carries the right bearer token.
fn authorized(gateway: &Gateway, headers: &HeaderMap) -> Result<Admin, Denied> {
    let Some((admin, token)) = &gateway.admin else {
        return Err(Denied::Disabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Ok(admin.clone())
    } else {
        Err(Denied::Unauthorized)
    }
}

fn admin_error(service: Option<&str>, err: &AdminError) -> Response {
    let (status, kind) = match err {
        AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "service_not_found"),
        AdminError::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "database_error"),
        _ => (StatusCode::BAD_REQUEST, "invalid_route"),
    };
    error_response(status, kind, service, &err.to_string())
}

async fn admin_list(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let admin = match authorized(&gateway, &headers) {
        Ok(admin) => admin,
        Err(denied) => return denied.into_response(),
    };
    match admin.list().await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(err) => admin_error(None, &err),
    }
}

async fn admin_get(
    State(gateway): State<Gateway>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    let admin = match authorized(&gateway, &headers) {
        Ok(admin) => admin,
        Err(denied) => return denied.into_response(),
    };
    match admin.get(&service).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(err) => admin_error(Some(&service), &err),
    }
}

/// The body of `PUT /admin/routes/{service}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteBody {
    strategy: String,
    #[serde(default)]
    endpoint: Option<String>,
    /// A JSON object (or a string holding one).
    #[serde(default)]
    config: Option<serde_json::Value>,
}

async fn admin_put(
    State(gateway): State<Gateway>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = match authorized(&gateway, &headers) {
        Ok(admin) => admin,
        Err(denied) => return denied.into_response(),
    };
    let body: RouteBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_route",
                Some(&service),
                &format!("invalid body: {err}"),
            );
        }
    };
    let config = match body.config {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text),
        Some(value) => Some(value.to_string()),
    };
    let row = RouteRow {
        service_name: service.clone(),
        strategy: body.strategy,
        endpoint: body.endpoint,
        config,
        updated_at: 0,
    };
    match admin.upsert(row).await {
        Ok(()) => match admin.get(&service).await {
            Ok(row) => axum::Json(row).into_response(),
            Err(err) => admin_error(Some(&service), &err),
        },
        Err(err) => admin_error(Some(&service), &err),
    }
}

async fn admin_delete(
    State(gateway): State<Gateway>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    let admin = match authorized(&gateway, &headers) {
        Ok(admin) => admin,
        Err(denied) => return denied.into_response(),
    };
    match admin.delete(&service).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => admin_error(Some(&service), &err),
    }
}

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
}

/// Runs the gateway until `shutdown` resolves, then stops accepting connections and waits for
/// in-flight requests. `ready` is told the bound address once the server accepts connections.
///
/// # Errors
///
/// The database cannot be opened or seeded, or the address cannot be bound.
pub async fn serve(
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
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

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    ready(addr);
    // Graceful: on the signal, stop accepting and let in-flight requests finish, for at most
    // the grace period.
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app(gateway)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping.send(true);
    });
    let grace = async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server.into_future() => result?,
        () = grace => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "requests still in flight after the grace period; stopping anyway"
        ),
    }
    watcher.stop();
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    tracing::info!("stopped");
    Ok(())
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

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
