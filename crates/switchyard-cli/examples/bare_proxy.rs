//! The floor of the gateway's load benchmark (`bench/load.sh`) for `http` routes: axum's server
//! and hyper-util's pooled client with nothing between them, one single-threaded runtime per
//! core as `switchyard serve` runs by default, `POST /{anything}` forwarded to one upstream.
//!
//! ```sh
//! cargo run --release -p switchyard-cli --example bare_proxy -- 127.0.0.1:9002 http://127.0.0.1:9001/charge
//! ```

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Upstream = (Client<HttpConnector, Full<Bytes>>, axum::http::Uri);

async fn forward(
    State((client, uri)): State<Upstream>,
    body: Bytes,
) -> Result<Bytes, (StatusCode, String)> {
    let failed = |e: &dyn std::fmt::Display| (StatusCode::BAD_GATEWAY, e.to_string());
    let request = axum::http::Request::post(uri)
        .body(Full::new(body))
        .map_err(|e| failed(&e))?;
    let response = client.request(request).await.map_err(|e| failed(&e))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(&e))?;
    Ok(body.to_bytes())
}

/// One core's server: its own runtime, socket (sharing the port) and connection pool.
fn serve(addr: SocketAddr, uri: axum::http::Uri) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let app = axum::Router::new()
            .route("/{service}", post(forward))
            .with_state((client, uri));
        axum::serve(listener, app).await
    })
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9002".to_owned())
        .parse()
        .map_err(std::io::Error::other)?;
    let uri: axum::http::Uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9001/charge".to_owned())
        .parse()
        .map_err(std::io::Error::other)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("bare proxy listening on http://{addr}, {cores} threads, to {uri}");
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let uri = uri.clone();
            std::thread::spawn(move || serve(addr, uri))
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| std::io::Error::other("a thread panicked"))??;
    }
    Ok(())
}
