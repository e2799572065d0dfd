//! The rate limit, the bulkhead and the breaker stacked in an axum app in switchyard's order,
//! served by a real hyper server on 127.0.0.1: requests beyond the bulkhead's slots are shed
//! with 503 while the admitted ones finish with 200, requests past the quota get 429 with
//! `Retry-After`. In that order the breaker sits inside both, so their refusals never reach it
//! and it stays closed though its threshold is one failure.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use switchyard::axum::{ErrorFormat, ForAxum};
use switchyard::prelude::*;
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceBuilder;

mod support;
use support::Server;

#[tokio::test]
async fn requests_beyond_the_bulkhead_are_shed_with_503_and_the_rest_succeed() {
    // The handler reports each request it starts, then waits for a go-ahead.
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Semaphore::new(0));

    let bulkhead = BulkheadLayer::new("api", &BulkheadConfig::new(2, BulkheadPolicy::HardReject))
        .expect("valid config");
    let slots = bulkhead.controller().clone();
    let breaker = CircuitBreakerLayer::new(
        "api",
        CircuitBreakerConfig::new(Trip::consecutive_failures(1)),
    )
    .expect("valid config")
    .with_classifier(HttpClassifier::server_errors());
    let circuit = breaker.handle();
    // Seven requests a minute: the five below and two more, then 429.
    let limit = RateLimitLayer::new("api", &RateLimitConfig::new("7/min".parse().expect("rate")))
        .expect("valid config");

    let app = Router::new()
        .route(
            "/work",
            get({
                let gate = Arc::clone(&gate);
                move || async move {
                    let _ = entered_tx.send(());
                    gate.acquire().await.expect("gate open").forget();
                    "done"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(limit)
                .layer(bulkhead)
                .layer(breaker)
                .for_axum()
                .format(ErrorFormat::Plain),
        );

    let server = Server::start(app).await;
    let get = || {
        let answer = server.get("/work");
        async move {
            let (status, _, body) = answer.await;
            (status, body)
        }
    };

    // Two requests take both slots and wait in the handler.
    let admitted: Vec<_> = (0..2).map(|_| tokio::spawn(get())).collect();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), entered.recv())
            .await
            .expect("the handler started")
            .expect("channel open");
    }
    assert_eq!(slots.stats().in_flight, 2);

    // Three more are shed at once, without reaching the handler.
    for _ in 0..3 {
        let (status, body) = get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "bulkhead full: api");
    }
    assert!(
        entered.try_recv().is_err(),
        "no shed request reached the handler"
    );

    // The admitted ones finish normally.
    gate.add_permits(2);
    for request in admitted {
        assert_eq!(
            request.await.expect("task"),
            (StatusCode::OK, "done".to_owned())
        );
    }
    let stats = slots.stats();
    assert_eq!((stats.in_flight, stats.rejected), (0, 3));
    assert_eq!(
        circuit.state(),
        BreakerState::Closed,
        "no refusal reached the breaker (threshold 1)"
    );

    // The quota: two more requests pass, the next is refused with 429 and Retry-After.
    gate.add_permits(2);
    for _ in 0..2 {
        assert_eq!(get().await, (StatusCode::OK, "done".to_owned()));
    }
    let (status, retry_after, _) = server.get("/work").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some(), "429 carries Retry-After");

    server.stop().await;
}
