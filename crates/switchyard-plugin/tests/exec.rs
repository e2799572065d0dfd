//! The exec transport against a real child process: `tests/fixtures/echo_plugin.py --stdio`,
//! a Python plugin answering each message on its own thread. Calls are multiplexed on one
//! child and matched by request id; a reply to no one is dropped; a child that dies fails the
//! calls in flight and is started again. Needs `python3` (or `$PYTHON`); skipped with a reason
//! where it cannot run, a failure when `SWITCHYARD_SERVICES=required`.

use std::time::Duration;

use switchyard_plugin::PluginRequest;
use switchyard_plugin::exec::{ExecConfig, ExecError, ExecTransport};
use tower::{BoxError, ServiceExt};

mod support;
use support::{SCRIPT, python};

fn transport(python: String) -> ExecTransport {
    let mut config = ExecConfig::new(python).args([SCRIPT, "--stdio"]);
    config.restart_backoff = Duration::from_millis(10);
    ExecTransport::new(config)
}

/// A call with `data`, bounded so that a lost reply fails the test instead of hanging it.
fn call(data: &str) -> PluginRequest {
    let mut request = PluginRequest::new(data).unwrap();
    request.ctx.timeout = Some(Duration::from_secs(20));
    request
}

async fn send(transport: &ExecTransport, data: &str) -> Result<serde_json::Value, BoxError> {
    let response = transport.clone().oneshot(call(data)).await?;
    Ok(response.decode()?)
}

fn exec_error(err: &BoxError) -> &ExecError {
    err.downcast_ref::<ExecError>()
        .unwrap_or_else(|| panic!("not an ExecError: {err}"))
}

#[tokio::test]
async fn calls_are_multiplexed_on_one_child_and_matched_by_id() {
    let Some(python) = python() else { return };
    let transport = transport(python);
    // A slow call and quick ones in flight together on one child, which answers out of order:
    // each reply reaches its own caller.
    let slow = tokio::spawn({
        let transport = transport.clone();
        async move { send(&transport, r#"{"act": "slow", "n": 0}"#).await }
    });
    let quick: Vec<_> = (1..=5)
        .map(|n| {
            let transport = transport.clone();
            tokio::spawn(async move { send(&transport, &format!(r#"{{"n": {n}}}"#)).await })
        })
        .collect();
    for (n, call) in (1..=5).zip(quick) {
        let answer = call.await.unwrap().unwrap();
        assert_eq!(answer["echo"]["n"], n);
    }
    assert_eq!(slow.await.unwrap().unwrap()["echo"]["n"], 0);

    let failed = send(&transport, r#"{"fail": true}"#).await.unwrap_err();
    assert!(
        matches!(exec_error(&failed), ExecError::PluginFailed { message } if message == "python says no")
    );
    transport.close().await;
}

#[tokio::test]
async fn a_reply_to_no_one_is_dropped_and_a_dead_child_is_started_again() {
    let Some(python) = python() else { return };
    let transport = transport(python);
    assert_eq!(
        send(&transport, r#"{"n": 1}"#).await.unwrap()["echo"]["n"],
        1
    );

    // The plugin answers under another id: no caller gets it; this one runs out of time.
    let mut lost = call(r#"{"act": "wrong-id"}"#);
    lost.ctx.timeout = Some(Duration::from_millis(300));
    let err = transport.clone().oneshot(lost).await.unwrap_err();
    assert!(matches!(exec_error(&err), ExecError::TimedOut(_)), "{err}");

    // The child dies mid-call: the call fails, and the next one starts a new child.
    let died = send(&transport, r#"{"act": "die"}"#).await.unwrap_err();
    assert!(matches!(exec_error(&died), ExecError::Exited), "{died}");
    assert_eq!(
        send(&transport, r#"{"n": 2}"#).await.unwrap()["echo"]["n"],
        2
    );
    transport.close().await;
}

#[tokio::test]
async fn a_program_that_does_not_exist_is_a_spawn_error() {
    let transport = ExecTransport::new(ExecConfig::new("/nonexistent/plugin"));
    let err = send(&transport, "{}").await.unwrap_err();
    assert!(matches!(exec_error(&err), ExecError::Spawn(_)), "{err}");
}
