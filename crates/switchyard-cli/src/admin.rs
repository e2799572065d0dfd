//! The admin API under `/admin/routes`, behind a bearer token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use switchyard_router::{Admin, AdminError, RouteRow};

use crate::gateway::{Gateway, error_response};

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Denied {
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
pub(crate) fn authorized(gateway: &Gateway, headers: &HeaderMap) -> Result<Admin, Denied> {
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
    // In time that depends only on the lengths: the token is not found out byte by byte.
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Ok(admin.clone())
    } else {
        Err(Denied::Unauthorized)
    }
}

pub(crate) fn admin_error(service: Option<&str>, err: &AdminError) -> Response {
    let (status, kind) = match err {
        AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "service_not_found"),
        AdminError::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "database_error"),
        _ => (StatusCode::BAD_REQUEST, "invalid_route"),
    };
    error_response(status, kind, service, &err.to_string())
}

pub(crate) async fn admin_list(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let admin = match authorized(&gateway, &headers) {
        Ok(admin) => admin,
        Err(denied) => return denied.into_response(),
    };
    match admin.list().await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(err) => admin_error(None, &err),
    }
}

pub(crate) async fn admin_get(
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
pub(crate) struct RouteBody {
    strategy: String,
    #[serde(default)]
    endpoint: Option<String>,
    /// A JSON object (or a string holding one).
    #[serde(default)]
    config: Option<serde_json::Value>,
}

pub(crate) async fn admin_put(
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

pub(crate) async fn admin_delete(
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
