//! The breaker used alone in an axum router, behind tower-http's `TraceLayer`, served by a
//! real hyper server on 127.0.0.1 and called over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use switchyard::axum::{ErrorFormat, ForAxum};
use switchyard::prelude::*;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

mod support;
use support::Server;

#[tokio::test]
async fn breaker_in_an_axum_router_sheds_a_failing_route_over_real_http() {
    let failing = Arc::new(AtomicBool::new(true));
    let reached = Arc::new(AtomicUsize::new(0));
    let breaker = CircuitBreakerLayer::new(
        "payments",
        CircuitBreakerConfig::new(Trip::consecutive_failures(2))
            .with_wait_in_open(Duration::from_secs(30)),
    )
    .expect("valid config")
    .with_classifier(HttpClassifier::server_errors());
    let handle = breaker.handle();

    let app = Router::new()
        .route(
            "/pay",
            get({
                let (failing, reached) = (Arc::clone(&failing), Arc::clone(&reached));
                move || async move {
                    reached.fetch_add(1, Ordering::SeqCst);
                    if failing.load(Ordering::SeqCst) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "ledger down")
                    } else {
                        (StatusCode::OK, "paid")
                    }
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(breaker.for_axum().format(ErrorFormat::Plain)),
        );

    let server = Server::start(app).await;

    // Two server errors trip the breaker...
    for _ in 0..2 {
        let (status, _, body) = server.get("/pay").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "ledger down")
        );
    }
    assert_eq!(handle.state(), BreakerState::Open);

    // ...and the third request is shed with 503 and a Retry-After, never reaching the handler.
    let (status, retry_after, body) = server.get("/pay").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "circuit open: payments");
    let retry_after: u64 = retry_after
        .expect("a Retry-After header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (1..=30).contains(&retry_after),
        "retry after {retry_after}s"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 2);

    // An operator resets the breaker once the ledger is back: traffic flows again.
    failing.store(false, Ordering::SeqCst);
    handle.reset();
    let (status, _, body) = server.get("/pay").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "paid"));
    assert_eq!(handle.snapshot().rejected, 1);

    server.stop().await;
}
