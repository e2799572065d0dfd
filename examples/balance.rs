//! An axum app that balances over three upstream servers on 127.0.0.1, with an active health
//! check on each. One upstream is stopped halfway: its health check fails, it leaves the
//! rotation, and the app keeps answering from the other two.
//!
//! `cargo run --example balance`

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard::balance::{Balance, EndpointConfig, Health, HealthCheckConfig, Strategy};
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
/// An upstream as the balancer sees it: a call answers the upstream's body.
type Upstream = BoxCloneSyncService<(), String, BoxError>;

/// Starts an upstream answering `name` on `/` and `ok` on `/health`; stop it with the sender.
async fn upstream(name: &'static str) -> (SocketAddr, oneshot::Sender<()>) {
    let app = axum::Router::new()
        .route("/", get(move || async move { name }))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// GETs `http://{addr}{path}` and answers the body, failing on a non-2xx status.
async fn get_text(client: HttpClient, addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let uri = format!("http://{addr}{path}").parse::<http::Uri>()?;
    let response = client.get(uri).await?;
    if !response.status().is_success() {
        return Err(format!("{addr} answered {}", response.status()).into());
    }
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn endpoint(client: HttpClient, addr: SocketAddr) -> Upstream {
    BoxCloneSyncService::new(service_fn(move |()| get_text(client.clone(), addr, "/")))
}

async fn front(State(balance): State<Balance<(), String>>) -> Result<String, (StatusCode, String)> {
    balance
        .oneshot(())
        .await
        .map(|answer| format!("answered by {answer}"))
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let balance: Balance<(), String> = Balance::new("upstreams", Strategy::RoundRobin);
    let checks = HealthCheckConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        failure_threshold: 2,
        success_threshold: 2,
    };
    let mut stops = Vec::new();
    let mut checkers = Vec::new();
    for name in ["upstream-1", "upstream-2", "upstream-3"] {
        let (addr, stop) = upstream(name).await;
        balance.add(
            name,
            endpoint(client.clone(), addr),
            &EndpointConfig::default(),
        )?;
        let client = client.clone();
        let check = service_fn(move |()| {
            let client = client.clone();
            async move {
                get_text(client, addr, "/health").await?;
                Ok::<_, BoxError>(Health::Healthy)
            }
        });
        checkers.push(balance.check(name, check, &checks)?);
        stops.push(Some(stop));
    }

    let app = axum::Router::new()
        .route("/", get(front))
        .with_state(balance.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("app listening on http://{addr}");

    for _ in 0..3 {
        println!("GET / -> {}", get_text(client.clone(), addr, "/").await?);
    }
    println!("stopping upstream-2");
    if let Some(stop) = stops[1].take() {
        let _ = stop.send(());
    }
    // Two failed checks, 100 ms apart, take it out of the rotation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("eligible now: {:?}", balance.eligible());
    for _ in 0..4 {
        println!("GET / -> {}", get_text(client.clone(), addr, "/").await?);
    }
    println!("overall health: {}", balance.overall_health());
    drop(checkers);
    Ok(())
}
