//! A plugin not written in Rust: `tests/fixtures/echo_plugin.py` speaks the unix-socket
//! protocol as the README documents it, and the unix transport calls it. Needs `python3` (or
//! `$PYTHON`); skipped with a reason where it cannot run, a failure when
//! `SWITCHYARD_SERVICES=required`.

use std::process::Stdio;
use std::time::Duration;

use switchyard_plugin::unix::{UnixConfig, UnixError, UnixTransport};
use switchyard_plugin::{ExecutionContext, Health, PluginRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tower::ServiceExt;

mod support;
use support::{SCRIPT, python};

#[tokio::test]
async fn a_plugin_written_in_python_speaks_the_documented_protocol() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.sock");
    let spawned = tokio::process::Command::new(&python)
        .arg(SCRIPT)
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = spawned.expect("the python plugin starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The bound only turns a plugin that never starts into a failure.
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the python plugin started")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));

    let transport = UnixTransport::new(UnixConfig::new(&path));
    let mut request = PluginRequest::new(r#"{"n": 7}"#).unwrap();
    request.ctx = ExecutionContext::new().with_header("X-Trace-ID", "py-1");
    let response = transport.clone().oneshot(request).await.unwrap();
    let data: serde_json::Value = response.decode().unwrap();
    assert_eq!(
        data,
        serde_json::json!({"echo": {"n": 7}, "lang": "python"})
    );
    assert_eq!(response.metadata["X-Trace-ID"], "py-1");

    let refused = transport
        .clone()
        .oneshot(PluginRequest::new(r#"{"fail": true}"#).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(refused.downcast_ref::<UnixError>(), Some(UnixError::PluginFailed { message, .. }) if message == "python says no"),
        "{refused}"
    );
    let info = transport.info().await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.capabilities.as_slice()),
        ("py-echo", &["echo".to_owned()][..])
    );
    assert_eq!(transport.health().await.status, Health::Healthy);
}
