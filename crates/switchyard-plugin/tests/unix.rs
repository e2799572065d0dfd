//! The unix transport against a real plugin on a socket file: success, the plugin's own error,
//! a deadline, a reply to another request, garbage, an oversized line, a plugin that hangs up
//! mid-call — each a typed error, the transport usable afterwards.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use switchyard_plugin::unix::{UnixConfig, UnixError, UnixTransport};
use switchyard_plugin::wire::{MessageType, PluginCodec, Reply};
use switchyard_plugin::{ExecutionContext, Health, PluginInfo, PluginRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::codec::Framed;
use tower::{BoxError, ServiceExt};

/// A plugin on `path` acting on each call's `{"act": ..}`; counts its connections.
fn plugin(path: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).expect("bind the socket");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut wire = Framed::new(stream, PluginCodec::default());
                while let Some(Ok(message)) = wire.next().await {
                    let reply = match message.kind {
                        MessageType::Health => Reply::ok(&message, Some(raw(r#"{"status": 1}"#))),
                        MessageType::Info => Reply::ok(
                            &message,
                            Some(raw(r#"{"name": "echo", "version": "1.0.0"}"#)),
                        ),
                        MessageType::Ping => Reply::ok(&message, None),
                        MessageType::Execute => {
                            let data = message.data.clone().expect("execute carries data");
                            let call: serde_json::Value = serde_json::from_str(data.get()).unwrap();
                            match call["act"].as_str().unwrap_or_default() {
                                "echo" => {
                                    let mut reply = Reply::ok(&message, Some(data));
                                    reply.headers = message.headers.clone();
                                    reply
                                }
                                "fail" => Reply::failed(&message, "invalid user"),
                                "hang" => std::future::pending().await,
                                "wrong-id" => {
                                    let mut reply = Reply::ok(&message, Some(data));
                                    reply.request_id = "someone-else".to_owned();
                                    reply
                                }
                                "garbage" => {
                                    wire.get_mut().write_all(b"not json\n").await.unwrap();
                                    continue;
                                }
                                "huge" => {
                                    let line = format!("{}\n", "x".repeat(4096));
                                    wire.get_mut().write_all(line.as_bytes()).await.unwrap();
                                    continue;
                                }
                                "die" => return,
                                other => panic!("unknown act {other}"),
                            }
                        }
                    };
                    wire.send(reply).await.unwrap();
                }
            });
        }
    });
    connections
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

fn call(act: &str) -> PluginRequest {
    PluginRequest::new(format!(r#"{{"act": "{act}"}}"#)).unwrap()
}

async fn send(transport: &UnixTransport, request: PluginRequest) -> Result<String, BoxError> {
    let response = transport.clone().oneshot(request).await?;
    Ok(response.data.get().to_owned())
}

fn transport(path: &Path) -> UnixTransport {
    let mut config = UnixConfig::new(path);
    config.max_line_bytes = 1024;
    UnixTransport::new(config)
}

fn unix_error(err: &BoxError) -> &UnixError {
    err.downcast_ref::<UnixError>()
        .unwrap_or_else(|| panic!("not a UnixError: {err}"))
}

#[tokio::test]
async fn calls_answer_and_reuse_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let connections = plugin(&path);
    let transport = transport(&path);
    let mut request = call("echo");
    request.ctx = ExecutionContext::new().with_header("X-Trace-ID", "t-1");
    let response = transport.clone().oneshot(request).await.unwrap();
    assert_eq!(response.data.get(), r#"{"act": "echo"}"#);
    assert_eq!(
        response.metadata["X-Trace-ID"], "t-1",
        "headers travel both ways"
    );
    for _ in 0..5 {
        assert_eq!(
            send(&transport, call("echo")).await.unwrap(),
            r#"{"act": "echo"}"#
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );

    assert_eq!(transport.health().await.status, Health::Healthy);
    let info: PluginInfo = transport.info().await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("echo", "1.0.0")
    );
}

#[tokio::test]
async fn every_fault_is_typed_and_the_next_call_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faulty.sock");
    let connections = plugin(&path);
    let transport = transport(&path);

    let failed = send(&transport, call("fail")).await.unwrap_err();
    assert!(
        matches!(unix_error(&failed), UnixError::PluginFailed { message, .. } if message == "invalid user"),
        "{failed}"
    );
    let wrong = send(&transport, call("wrong-id")).await.unwrap_err();
    assert!(
        matches!(unix_error(&wrong), UnixError::WrongRequestId { got, .. } if got == "someone-else"),
        "{wrong}"
    );
    let garbage = send(&transport, call("garbage")).await.unwrap_err();
    assert!(
        matches!(unix_error(&garbage), UnixError::Wire(_)),
        "{garbage}"
    );
    let huge = send(&transport, call("huge")).await.unwrap_err();
    assert!(matches!(unix_error(&huge), UnixError::Wire(_)), "{huge}");
    let died = send(&transport, call("die")).await.unwrap_err();
    assert!(matches!(unix_error(&died), UnixError::Closed), "{died}");
    // A plugin error leaves the connection clean; each other fault drops its connection.
    assert_eq!(
        send(&transport, call("echo")).await.unwrap(),
        r#"{"act": "echo"}"#
    );
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_ends_a_call_the_plugin_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    plugin(&path);
    let transport = transport(&path);
    let mut request = call("hang");
    request.ctx.timeout = Some(Duration::from_secs(2));
    let late = send(&transport, request).await.unwrap_err();
    assert!(matches!(unix_error(&late), UnixError::TimedOut(d) if *d == Duration::from_secs(2)));
    // The hung connection was dropped: a late reply could reach no one.
    assert_eq!(
        send(&transport, call("echo")).await.unwrap(),
        r#"{"act": "echo"}"#
    );
}

#[tokio::test]
async fn an_absent_plugin_is_a_connect_error_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let transport = transport(&dir.path().join("nobody.sock"));
    let err = send(&transport, call("echo")).await.unwrap_err();
    assert!(matches!(unix_error(&err), UnixError::Connect(_)), "{err}");
    assert_eq!(transport.health().await.status, Health::Offline);
}
