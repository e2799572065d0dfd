//! axum in one line, over a real hyper server on 127.0.0.1: the whole stack with
//! `switchyard::axum::ResilienceLayer::http(..)` in `route_layer`, single layers with
//! `.for_axum()`, per-route layers from a map, and `?` on switchyard errors in a handler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard::axum::{ErrorFormat, ForAxum, Rejected, ResilienceLayer};
use switchyard::prelude::{
    BoxError, CircuitBreakerConfig, CircuitBreakerLayer, RateLimitConfig, RateLimitLayer,
    ResilienceConfig, StackRegistry, Trip,
};
use tower::{Layer, ServiceExt, service_fn};

/// An app served on an ephemeral 127.0.0.1 port, for the test's life.
struct Served {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    content_type: Option<HeaderValue>,
    body: String,
}

impl Answer {
    fn kind(&self) -> String {
        let json: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body));
        json["error"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn serve(app: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        base: format!("http://{addr}"),
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Served {
    async fn send(&self, method: &str, path: &str, body: &'static str) -> Answer {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            retry_after,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn post(&self, path: &str, body: &'static str) -> Answer {
        self.send("POST", path, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, "").await
    }
}

fn config(json: &str) -> ResilienceConfig {
    ResilienceConfig::from_json(json).expect("a valid config")
}

/// The snippet users write first, as written, with a slow route beside it: a total
/// deadline that passes answers 504 with the JSON error (paused time: the handler's hour is
/// virtual).
#[tokio::test(start_paused = true)]
async fn the_first_snippet_compiles_and_a_timeout_is_a_504() -> Result<(), BoxError> {
    let cfg = ResilienceConfig::from_json(r#"{"timeout":"2s","retry":{"max_attempts":3}}"#)?;
    let app: Router = Router::new()
        .route(
            "/pay",
            post(|body: String| async move { format!("paid {body}") }),
        )
        .route_layer(ResilienceLayer::http("pay", &cfg)?);
    let slow = Router::new()
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route_layer(ResilienceLayer::http(
            "slow",
            &config(r#"{"timeout":"2s"}"#),
        )?);
    let server = serve(app.merge(slow)).await;

    let paid = server.post("/pay", "$5").await;
    assert_eq!(
        (paid.status, paid.body.as_str()),
        (StatusCode::OK, "paid $5")
    );
    let late = server.post("/slow", "$5").await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT, "{}", late.body);
    assert_eq!(late.kind(), "timeout");
    assert_eq!(late.content_type.unwrap(), "application/json");
    Ok(())
}

/// Answers 503 to its first `failures` calls, then echoes the body; counts its calls. `PUT`:
/// retries repeat only idempotent methods (a `POST` only when marked `Idempotent`).
fn flaky(failures: u32, calls: &Arc<AtomicU32>) -> axum::routing::MethodRouter {
    let calls = Arc::clone(calls);
    axum::routing::put(move |body: String| async move {
        if calls.fetch_add(1, Ordering::SeqCst) < failures {
            (StatusCode::SERVICE_UNAVAILABLE, "not yet".to_owned())
        } else {
            (StatusCode::OK, format!("paid {body}"))
        }
    })
}

#[tokio::test]
async fn retries_breaker_and_rate_limit_answer_as_core_maps_them() {
    let (retried, tripped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let retry = r#"{"retry":{"max_attempts":3,"backoff":{"initial":"1ms"},"jitter":"none"}}"#;
    let breaker = r#"{"circuit_breaker":{"trip":{"consecutive_failures":{"threshold":2}},
                       "wait_in_open":"1m"}}"#;
    let app = Router::new()
        .route("/retried", flaky(2, &retried))
        .route_layer(ResilienceLayer::http("retried", &config(retry)).unwrap())
        .merge(
            Router::new()
                .route("/tripped", flaky(u32::MAX, &tripped))
                .route_layer(ResilienceLayer::http("tripped", &config(breaker)).unwrap()),
        )
        .merge(
            Router::new()
                .route("/limited", get(|| async { "ok" }))
                .route_layer(
                    ResilienceLayer::http("limited", &config(r#"{"rate_limit":{"rate":"2/m"}}"#))
                        .unwrap()
                        .format(ErrorFormat::Plain),
                ),
        );
    let server = serve(app).await;

    // Retried through two 503s, the body replayed each time: one answer, three calls.
    let answer = server.send("PUT", "/retried", "$7").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "paid $7")
    );
    assert_eq!(retried.load(Ordering::SeqCst), 3);

    // Two 503s trip the breaker; then it refuses, with Retry-After, before the handler.
    for _ in 0..2 {
        assert_eq!(
            server.send("PUT", "/tripped", "$1").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let open = server.send("PUT", "/tripped", "$1").await;
    assert_eq!(open.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(open.kind(), "circuit_open");
    assert!(
        open.retry_after.is_some(),
        "an open breaker says when to retry"
    );
    assert_eq!(
        tripped.load(Ordering::SeqCst),
        2,
        "the handler saw nothing more"
    );

    // Past 2 a minute: 429 with Retry-After, rendered as plain text as configured.
    assert_eq!(server.get("/limited").await.status, StatusCode::OK);
    assert_eq!(server.get("/limited").await.status, StatusCode::OK);
    let limited = server.get("/limited").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.retry_after.is_some());
    assert_eq!(limited.content_type.unwrap(), "text/plain; charset=utf-8");
    assert!(limited.body.contains("limited"), "{}", limited.body);
}

#[tokio::test]
async fn single_layers_fit_with_for_axum_and_routes_come_from_a_map() {
    let breaker = CircuitBreakerLayer::new(
        "ledger",
        CircuitBreakerConfig::new(Trip::consecutive_failures(1))
            .with_wait_in_open(Duration::from_secs(60)),
    )
    .unwrap()
    .with_classifier(switchyard::prelude::HttpClassifier::server_errors());
    let limit = RateLimitLayer::new(
        "search",
        &serde_json::from_str::<RateLimitConfig>(r#"{"rate":"1/m"}"#).unwrap(),
    )
    .unwrap();
    let configs: BTreeMap<String, ResilienceConfig> = switchyard::core::config::from_json(
        r#"{"quotes": {"rate_limit": {"rate": "1/m"}}, "orders": {"timeout": "5s"}}"#,
        "routes",
    )
    .unwrap();
    let registry = StackRegistry::new();
    let layers = switchyard::axum::layers(configs, &registry).unwrap();
    let app = Router::new()
        .route(
            "/ledger",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }).layer(breaker.for_axum()),
        )
        .route("/search", get(|| async { "found" }).layer(limit.for_axum()))
        .route(
            "/quotes",
            get(|| async { "42" }).layer(layers["quotes"].clone()),
        )
        .route(
            "/orders",
            get(|| async { "[]" }).layer(layers["orders"].clone()),
        );
    let server = serve(app).await;

    assert_eq!(
        server.get("/ledger").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let open = server.get("/ledger").await;
    assert_eq!(
        (open.status, open.kind().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    assert_eq!(server.get("/search").await.status, StatusCode::OK);
    assert_eq!(
        server.get("/search").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(server.get("/quotes").await.body, "42");
    assert_eq!(
        server.get("/quotes").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(server.get("/orders").await.body, "[]");
    assert_eq!(registry.names(), ["orders", "quotes"]);

    // A bad config names its route.
    let bad: BTreeMap<String, ResilienceConfig> = BTreeMap::from([(
        "refunds".to_owned(),
        // Read without validation, as a map from a file is: the build validates it.
        serde_json::from_str(r#"{"retry": {"max_attempts": 0}}"#).unwrap(),
    )]);
    let err = switchyard::axum::layers(bad, &registry).unwrap_err();
    assert!(err.field().starts_with("refunds."), "{err}");
}

#[tokio::test]
async fn a_handler_uses_question_mark_on_switchyard_errors() {
    // A raw stack called from inside a handler: its rejection is the handler's answer. (Boxed:
    // the stack's own future type is more than the compiler proves `Send` inside a handler.)
    let stack = switchyard::prelude::ResilienceLayer::new(
        "pricing",
        &config(r#"{"rate_limit":{"rate":"1/m"}}"#),
    )
    .unwrap()
    .layer(service_fn(|sku: String| async move {
        Ok::<_, BoxError>(format!("{sku}: 42"))
    }));
    let stack = tower::util::BoxCloneSyncService::new(stack);
    let app = Router::new().route(
        "/price",
        get(move || {
            let stack = stack.clone();
            async move {
                let price: String = stack.oneshot("ACME".to_owned()).await?;
                Ok::<_, Rejected>(price)
            }
        }),
    );
    let server = serve(app).await;
    assert_eq!(server.get("/price").await.body, "ACME: 42");
    let refused = server.get("/price").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.kind(), "rate_limited");
    assert!(refused.retry_after.is_some());
}
