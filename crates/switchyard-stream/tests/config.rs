//! Options that say no, and failure kinds mapped as core maps them.

use std::time::Duration;

use switchyard_stream::{FailureKind, Options, Pipeline};

mod support;
use support::*;

#[test]
fn bad_options_name_their_field() {
    let recorder = Recorder::new(Duration::ZERO);
    let err = Pipeline::new("test", options(KEYED), recorder.handler()).unwrap_err();
    assert_eq!(err.field(), "ordering.mode");
    for (json, field) in [
        (
            r#"{ "backpressure": { "capacity": 1, "max_wait": "0s" } }"#,
            "backpressure.max_wait",
        ),
        (
            r#"{ "backpressure": { "policy": "sometimes" } }"#,
            "backpressure.policy",
        ),
        (r#"{ "ordering": { "mode": "lifo" } }"#, "ordering.mode"),
        (
            r#"{ "shutdown": { "grace_period": "soon" } }"#,
            "shutdown.grace_period",
        ),
    ] {
        assert_eq!(
            Options::from_json(json).unwrap_err().field(),
            field,
            "{json}"
        );
    }
}

#[test]
fn failure_kinds_map_as_core_does() {
    for kind in FailureKind::ALL {
        if let Some(rejection) = kind.rejection_kind() {
            assert_eq!(
                i32::from(kind.code()),
                rejection.grpc_code() as i32,
                "{kind}"
            );
        }
        assert!(!(kind.is_terminal() && kind.is_retryable()), "{kind}");
        assert!(!(kind.is_terminal() && kind.breaks_ordering()), "{kind}");
    }
    assert_eq!(FailureKind::None.code(), tonic::Code::Ok);
    assert!(FailureKind::HandlerError.is_retryable());
    assert!(FailureKind::Shutdown.is_terminal());
}
