//! The plugin side: a tower service served with `serve`, called over a real unix socket by the
//! unix transport, and over an in-memory pipe as the exec transport's stdio would be.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use switchyard_plugin::serve::{self, Served};
use switchyard_plugin::unix::{UnixConfig, UnixError, UnixTransport};
use switchyard_plugin::wire::{FrameCodec, Message, MessageType};
use switchyard_plugin::{ExecutionContext, Health, PluginInfo, PluginRequest, PluginResponse};
use tokio_util::codec::{FramedRead, FramedWrite};
use tower::{BoxError, ServiceExt, service_fn};

/// Echoes its data and its context's headers; fails on `"fail"`; sleeps an hour on `"slow"`.
fn echo()
-> impl tower::Service<PluginRequest, Response = PluginResponse, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|request: PluginRequest| async move {
        match request.data.get() {
            r#""fail""# => return Err::<_, BoxError>("no such user".into()),
            r#""slow""# => tokio::time::sleep(Duration::from_secs(3600)).await,
            _ => {}
        }
        Ok(PluginResponse {
            data: request.data,
            metadata: request.ctx.headers,
        })
    })
}

#[tokio::test]
async fn a_served_service_answers_the_unix_transport() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let info = PluginInfo {
        name: "echo".into(),
        version: "2.0.0".into(),
        ..PluginInfo::default()
    };
    let served = Served::new(echo()).info(info);
    let server = tokio::spawn(served.unix(path.clone(), async move {
        let _ = stopped.await;
    }));
    // The socket exists once bound: wait for it (the bound only turns a failure into one).
    for _ in 0..2000 {
        if path.exists() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let transport = UnixTransport::new(UnixConfig::new(&path));
    let mut request = PluginRequest::new(r#"{"n": 1}"#).unwrap();
    request.ctx = ExecutionContext::new().with_header("X-Trace-ID", "t-9");
    let response = transport.clone().oneshot(request).await.unwrap();
    assert_eq!(response.data.get(), r#"{"n": 1}"#);
    assert_eq!(response.metadata["X-Trace-ID"], "t-9");

    let failed = transport
        .clone()
        .oneshot(PluginRequest::new(r#""fail""#).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(failed.downcast_ref::<UnixError>(), Some(UnixError::PluginFailed { message, .. }) if message == "no such user"),
        "{failed}"
    );
    assert_eq!(transport.info().await.unwrap().version, "2.0.0");
    assert_eq!(transport.health().await.status, Health::Healthy);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn replies_leave_as_they_are_ready_and_a_deadline_is_kept() {
    let (caller, plugin) = tokio::io::duplex(1 << 16);
    let (plugin_read, plugin_write) = tokio::io::split(plugin);
    let served =
        tokio::spawn(Served::new(echo()).io(plugin_read, plugin_write, std::future::pending()));
    let (caller_read, caller_write) = tokio::io::split(caller);
    let mut to_plugin = FramedWrite::new(caller_write, FrameCodec::default());
    let mut from_plugin = FramedRead::new(caller_read, FrameCodec::default());

    let mut slow = Message::execute(&PluginRequest::new(r#""slow""#).unwrap());
    slow.request_id = "slow".into();
    slow.timeout_ms = Some(2_000);
    let mut quick = Message::execute(&PluginRequest::new("42").unwrap());
    quick.request_id = "quick".into();
    to_plugin.send(slow).await.unwrap();
    to_plugin.send(quick).await.unwrap();
    to_plugin
        .send(Message::control(MessageType::Ping, "ping"))
        .await
        .unwrap();

    let mut replies = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..3 {
        let reply = from_plugin.next().await.unwrap().unwrap();
        order.push(reply.request_id.clone());
        replies.insert(reply.request_id.clone(), reply);
    }
    assert_eq!(
        order.last().map(String::as_str),
        Some("slow"),
        "the slow call answers last"
    );
    assert_eq!(
        replies["quick"].data.as_deref().map(|d| d.get()),
        Some("42")
    );
    assert!(replies["ping"].success);
    let slow = &replies["slow"];
    assert!(
        !slow.success && slow.error.contains("did not finish"),
        "{slow:?}"
    );

    // The caller hangs up: the plugin's loop ends cleanly.
    to_plugin.close().await.unwrap();
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_functions_take_a_plain_service() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fn.sock");
    let server = tokio::spawn(serve::unix(path.clone(), echo(), async {}));
    // Told to stop at once: it binds, then returns.
    server.await.unwrap().unwrap();
    assert!(path.exists(), "it bound the socket");
}
