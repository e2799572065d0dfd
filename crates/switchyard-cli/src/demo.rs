//! The built-in demo services and the rows a new routes file is seeded with.

use axum::body::Bytes;
use switchyard_router::{GrpcTransport, HttpTransport, RouteRow, Router};
use tower::{BoxError, service_fn};

/// A router with the built-in demo services registered as local services:
///
/// - `echo` answers the request body;
/// - `billing` answers `billed:` followed by the body (the router example's billing service).
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
