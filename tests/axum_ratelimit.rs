//! The rate limit in an axum app on a real hyper server on 127.0.0.1: requests past the quota
//! get 429 with `Retry-After` (through core's `http_response`), the rest 200, and the limit is
//! shared by the clones axum makes of the service.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use switchyard::axum::{ErrorFormat, ForAxum};
use switchyard::prelude::*;

mod support;
use support::Server;

#[tokio::test]
async fn requests_past_the_quota_get_429_with_retry_after_and_the_rest_200() {
    // 5 a minute: the test's requests all fall in one window however slow the machine.
    let limit = RateLimitLayer::new("api", &RateLimitConfig::new("5/min".parse().expect("rate")))
        .expect("valid config");
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/bye", get(|| async { "bye" }))
        .layer(limit.for_axum().format(ErrorFormat::Plain));

    let server = Server::start(app).await;
    // Eight concurrent requests over two routes: one shared quota of 5.
    let requests: Vec<_> = (0..8)
        .map(|n| tokio::spawn(server.get(if n % 2 == 0 { "/hello" } else { "/bye" })))
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for request in requests {
        let (status, retry_after, body) = request.await.expect("task");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(body, "rate limited: api");
                let secs: u64 = retry_after
                    .expect("a Retry-After header")
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("seconds");
                assert!((1..=60).contains(&secs), "retry after {secs}s");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (5, 3));

    server.stop().await;
}
