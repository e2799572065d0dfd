//! The baseline and the upstream of the gateway's load benchmark (`bench/load.sh`): bare axum
//! doing what the gateway's built-in `billing` service does (`POST /billing` → `billed:` +
//! body), with no router, no stack and no metrics.
//!
//! ```sh
//! cargo run --release -p switchyard-cli --example bare_axum -- 127.0.0.1:9001
//! ```

use axum::routing::post;
use bytes::Bytes;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let billing =
        post(|body: Bytes| async move { format!("billed:{}", String::from_utf8_lossy(&body)) });
    let app = axum::Router::new()
        .route("/billing", billing.clone())
        .route("/charge", billing);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare axum listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
