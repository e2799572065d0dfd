//! Two providers of one kind — a quote service backed by an HTTP upstream on 127.0.0.1, and an
//! in-process fallback — behind a provider manager with a priority list. The HTTP provider
//! checks its upstream when it is initialized and is health-checked in the background; when
//! the upstream stops, the manager fails over to the in-process provider, and `close_all`
//! closes both on shutdown, in reverse order.
//!
//! `cargo run --example provider`

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use switchyard::balance::{Health, HealthCheckConfig};
use switchyard::provider::{
    Close, Initialize, Manager, Provider, ProviderRegistry, Selection, patterns,
};
use switchyard::resilience::ResilienceConfig;
use tokio::sync::oneshot;
use tower::{BoxError, Service, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The HTTP provider's typed config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    upstream: SocketAddr,
}

/// A quote provider backed by an HTTP upstream: a call GETs `/quote?symbol=...`.
#[derive(Clone)]
struct HttpQuotes {
    client: HttpClient,
    upstream: SocketAddr,
}

impl HttpQuotes {
    async fn get(&self, path: &str) -> Result<String, BoxError> {
        let uri = format!("http://{}{path}", self.upstream).parse::<http::Uri>()?;
        let response = self.client.get(uri).await?;
        if !response.status().is_success() {
            return Err(format!("upstream answered {}", response.status()).into());
        }
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

impl Service<String> for HttpQuotes {
    type Response = String;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, symbol: String) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.get(&format!("/quote?symbol={symbol}")).await })
    }
}

impl Initialize for HttpQuotes {
    /// Refuses to start against an upstream that does not answer its health check.
    async fn initialize(&self) -> Result<(), BoxError> {
        self.get("/health").await.map(drop)
    }
}

impl Close for HttpQuotes {
    async fn close(&self) -> Result<(), BoxError> {
        println!("closing the HTTP provider (its idle connections go with the client)");
        Ok(())
    }
}

/// Starts the upstream; stop it with the sender.
async fn upstream() -> Result<(SocketAddr, oneshot::Sender<()>), BoxError> {
    let app = axum::Router::new()
        .route("/quote", get(|| async { "42.00 (live, over HTTP)" }))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (addr, stop) = upstream().await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let registry = Arc::new(ProviderRegistry::<String, String>::new());
    registry.register_typed("http", {
        let client = client.clone();
        move |config: HttpConfig| {
            Ok::<_, BoxError>(Provider::with_lifecycle(HttpQuotes {
                client: client.clone(),
                upstream: config.upstream,
            }))
        }
    });
    registry.register("in-process", |_: &serde_json::Value| {
        Ok::<_, BoxError>(Provider::new(service_fn(|symbol: String| async move {
            Ok::<_, BoxError>(format!("41.50 for {symbol} (cached, in-process)"))
        })))
    });

    let manager = Manager::new(
        "quotes",
        registry,
        Selection::Priority(vec!["http".into(), "in-process".into()]),
    );
    let resilience = ResilienceConfig::from_json(r#"{ "timeout": "500ms" }"#)?;
    manager
        .initialize_with(
            "http",
            &json!({ "upstream": addr.to_string() }),
            patterns::request_response("http", &resilience)?,
        )
        .await?;
    manager.initialize("in-process", &json!({})).await?;

    let http = HttpQuotes {
        client: client.clone(),
        upstream: addr,
    };
    let check = service_fn(move |()| {
        let http = http.clone();
        async move {
            http.get("/health").await?;
            Ok::<_, BoxError>(Health::Healthy)
        }
    });
    let checks = HealthCheckConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        failure_threshold: 2,
        success_threshold: 2,
    };
    let _checker = manager.check("http", check, &checks)?;

    println!("available: {:?}", manager.available());
    for _ in 0..2 {
        println!("quote -> {}", manager.clone().oneshot("ACME".into()).await?);
    }

    println!("stopping the HTTP upstream");
    let _ = stop.send(());
    // Two failed checks, 100 ms apart, take it out of the selection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("available: {:?}", manager.available());
    for _ in 0..2 {
        println!("quote -> {}", manager.clone().oneshot("ACME".into()).await?);
    }

    manager.close_all(Duration::from_secs(5)).await?;
    println!("closed; get() now says: {}", manager.get().unwrap_err());
    Ok(())
}
