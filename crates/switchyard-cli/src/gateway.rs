//! The gateway: `POST /{service}` dispatched through the router, every failure rendered as
//! one JSON error by the core mapping.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use switchyard_core::find_rejection;
use switchyard_router::{Admin, Router};
use tower::{BoxError, ServiceExt};

use crate::admin::{admin_delete, admin_get, admin_list, admin_put};
use crate::metrics::metrics_text;
use crate::status::{status_json, status_page};
use crate::tls::ServerTls;

/// The largest request body the gateway reads by default (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Everything the gateway's handlers share.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) router: Router,
    pub(crate) admin: Option<(Admin, Arc<str>)>,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) max_body_bytes: usize,
    pub(crate) tls: Option<Arc<ServerTls>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin token is a secret: only whether there is one.
        f.debug_struct("Gateway")
            .field("router", &self.router)
            .field("admin", &self.admin.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("max_body_bytes", &self.max_body_bytes)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Gateway {
    /// A gateway over `router`, with no admin API and the default body limit.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            admin: None,
            metrics: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: None,
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

    /// Reports `tls`'s state (the certificate served, the last reload) in `/status`.
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<ServerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Refuses request bodies longer than `bytes` with 413.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
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
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    service: Option<&str>,
    message: &str,
) -> Response {
    let body = json!({ "error": { "kind": kind, "service": service, "message": message } });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn call_error(service: &str, err: &BoxError) -> Response {
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

pub(crate) async fn call_healthz(State(gateway): State<Gateway>, body: Body) -> Response {
    call(&gateway, "healthz", body).await
}

pub(crate) async fn call_metrics(State(gateway): State<Gateway>, body: Body) -> Response {
    call(&gateway, "metrics", body).await
}

pub(crate) async fn call_status(State(gateway): State<Gateway>, body: Body) -> Response {
    call(&gateway, "status", body).await
}

pub(crate) async fn call_service(
    State(gateway): State<Gateway>,
    Path(service): Path<String>,
    body: Body,
) -> Response {
    call(&gateway, &service, body).await
}

pub(crate) async fn call(gateway: &Gateway, service: &str, body: Body) -> Response {
    let route = match gateway.router.route(service) {
        Ok(route) => route,
        // Rendered like every other rejection: 404 `service_not_found`, by the core mapping.
        Err(not_found) => return call_error(service, &BoxError::from(not_found)),
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
