//! The rate limit in an axum app on a real hyper server on 127.0.0.1: requests past the quota
//! get 429 with `Retry-After` (through core's `http_response`), the rest 200, and the limit is
//! shared by the clones axum makes of the service.

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard::prelude::*;
use tower::ServiceBuilder;

async fn handle_error(err: BoxError) -> Response {
    match find_rejection(&*err) {
        Some(rejection) => switchyard::core::rejection::http_response(rejection).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

#[tokio::test]
async fn requests_past_the_quota_get_429_with_retry_after_and_the_rest_200() {
    // 5 a minute: the test's requests all fall in one window however slow the machine.
    let limit = RateLimitLayer::new("api", &RateLimitConfig::new("5/min".parse().expect("rate")))
        .expect("valid config");
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/bye", get(|| async { "bye" }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(limit),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // Eight concurrent requests over two routes: one shared quota of 5.
    let requests: Vec<_> = (0..8)
        .map(|n| {
            let client = client.clone();
            let path = if n % 2 == 0 { "hello" } else { "bye" };
            let uri: hyper::Uri = format!("http://{addr}/{path}").parse().expect("uri");
            tokio::spawn(async move {
                let response = client.get(uri).await.expect("request");
                let status = response.status();
                let retry_after = response.headers().get("retry-after").cloned();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                (
                    status,
                    retry_after,
                    String::from_utf8_lossy(&body).into_owned(),
                )
            })
        })
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

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}
