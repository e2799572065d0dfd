//! What the workspace's axum tests share: an app served on 127.0.0.1 by a real hyper server,
//! and a plain HTTP/1 client's GET.

use std::net::SocketAddr;

use axum::http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An axum app served on an ephemeral 127.0.0.1 port until [`stop`](Self::stop).
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A response's status, `Retry-After` header and body.
pub(crate) type Answer = (StatusCode, Option<HeaderValue>, String);

impl Server {
    /// Serves `app` with graceful shutdown.
    pub(crate) async fn start(app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        Self {
            addr,
            client,
            stop,
            task,
        }
    }

    /// GETs `path` (e.g. `/pay`) and reads the whole answer.
    pub(crate) fn get(&self, path: &str) -> impl Future<Output = Answer> + Send + use<> {
        let client = self.client.clone();
        let uri: hyper::Uri = format!("http://{}{path}", self.addr).parse().expect("uri");
        async move {
            let response = client.get(uri).await.expect("request");
            let status = response.status();
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
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
        }
    }

    /// Stops the server gracefully and checks it ended cleanly.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("server");
    }
}
