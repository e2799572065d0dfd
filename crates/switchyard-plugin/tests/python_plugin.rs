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

#[tokio::test]
async fn a_plugin_written_in_python_speaks_the_documented_protocol() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/echo_plugin.py");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.sock");
    let spawned = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if std::env::var("SWITCHYARD_SERVICES").as_deref() != Ok("required") => {
            eprintln!("skipped: {python} cannot run ({e}); set PYTHON to a Python 3");
            return;
        }
        Err(e) => panic!("{python} cannot run: {e}"),
    };
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
