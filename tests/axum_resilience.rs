//! Per-route resilience from a JSON file in an axum app on a real hyper server on 127.0.0.1:
//! two routes, each with its own `ResilienceConfig`, in front of one flaky in-process backend
//! that fails its first two calls per route. The quotes route retries through the failures;
//! the orders route does not retry, trips its breaker, and past its rate limit answers 429.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard::prelude::*;
use switchyard::retry::http::ReplayBody;
use tower::util::MapRequestLayer;
use tower::{ServiceBuilder, service_fn};

mod support;
use support::Server;

async fn handle_error(err: BoxError) -> Response {
    match find_rejection(&*err) {
        Some(rejection) => switchyard::core::rejection::http_response(rejection).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// An in-process backend answering 503 to its first two calls, then 200; counts its calls.
fn flaky(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<Request<Body>, Response = Response, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, BoxError>(if n < 2 {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            } else {
                "ok".into_response()
            })
        }
    })
}

#[tokio::test]
async fn each_route_behaves_as_its_config_in_the_json_file_says() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resilience.json"
    ))
    .expect("fixture");
    let documents: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).expect("json");
    let registry = StackRegistry::new();
    let (quotes_calls, orders_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut app = Router::new();
    for (route, document) in &documents {
        let config = ResilienceConfig::from_json(&document.to_string()).expect("valid config");
        let stack = ResilienceLayer::http(route.as_str(), &config).expect("stack");
        registry.register(stack.handles());
        let calls = if route == "quotes" {
            &quotes_calls
        } else {
            &orders_calls
        };
        let service = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .layer(stack)
            .layer(MapRequestLayer::new(|r: Request<ReplayBody<Body>>| {
                r.map(Body::new)
            }))
            .service(flaky(Arc::clone(calls)));
        app = app.route_service(&format!("/{route}"), service);
    }

    let server = Server::start(app).await;
    let get = |path: &str| server.get(path);

    // Quotes: a GET retried through two 503s: one answer, three backend calls.
    let (status, _, body) = get("/quotes").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(quotes_calls.load(Ordering::SeqCst), 3);

    // Orders: no retry section: the two 503s reach the client and trip the breaker.
    assert_eq!(get("/orders").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get("/orders").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(orders_calls.load(Ordering::SeqCst), 2);
    let orders = registry.get("orders").expect("registered");
    assert_eq!(
        orders.breaker.expect("a breaker").state(),
        BreakerState::Open
    );

    // Past its quota of 2 a minute, the rate limit (outermost) refuses before the breaker.
    let (status, retry_after, _) = get("/orders").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some(), "429 carries Retry-After");
    assert_eq!(
        orders_calls.load(Ordering::SeqCst),
        2,
        "the backend saw nothing more"
    );

    // The registry reads both stacks as data.
    let snapshot = serde_json::to_value(registry.snapshot()).expect("serialisable");
    assert_eq!(snapshot[0]["name"], "orders");
    assert_eq!(snapshot[1]["name"], "quotes");
    assert_eq!(snapshot[0]["bulkhead"]["in_flight"], 0);

    server.stop().await;
}
