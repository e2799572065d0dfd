//! Config that says no, and failure kinds mapped as core maps them.

use std::time::Duration;

use switchyard_stream::{FailureKind, Pipeline, StreamConfig};

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
        (r#"{ "retry": { "backoff": "soon" } }"#, "retry.backoff"),
        (r#"{ "retry": { "backoff": 5 } }"#, "retry.backoff"),
        (
            r#"{ "retry": { "backoff": { "initial": "1s", "max": "10ms" } } }"#,
            "retry.backoff.initial",
        ),
        (
            r#"{ "retry": { "backoff": { "initial": "1s", "multiplier": 0.5 } } }"#,
            "retry.backoff.multiplier",
        ),
        (
            r#"{ "retry": { "backoff": { "initial": "1s", "maximum": "2s" } } }"#,
            "retry.backoff.maximum",
        ),
        (
            r#"{ "retry": { "backoff": "2h" } }"#,
            "retry.backoff.initial",
        ),
        (
            r#"{ "retry": { "backoff": "0s", "jitter": "decorrelated" } }"#,
            "retry.backoff.initial",
        ),
        (r#"{ "retry": { "jitter": "lots" } }"#, "retry.jitter"),
    ] {
        assert_eq!(
            StreamConfig::from_json(json).unwrap_err().field(),
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

#[test]
fn a_backoff_reads_as_a_duration_or_an_object_and_writes_back_the_same() {
    for json in [
        r#"{"retry":{"max_attempts":3,"backoff":"50ms","jitter":"none"}}"#,
        r#"{"retry":{"max_attempts":3,"backoff":{"initial":"10ms","multiplier":2.0,"max":"1s"},"jitter":"full"}}"#,
    ] {
        let options = StreamConfig::from_json(json).unwrap();
        let written = serde_json::to_string(&options).unwrap();
        assert_eq!(
            StreamConfig::from_json(&written).unwrap(),
            options,
            "{written}"
        );
        let retry = serde_json::to_value(&options).unwrap()["retry"].clone();
        let given: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(retry, given["retry"], "{written}");
    }
    // Unset: no pause and no jitter, as before a backoff could grow.
    let options = StreamConfig::default();
    assert_eq!(options.retry.backoff.initial, Duration::ZERO);
    assert_eq!(options.retry.backoff.max, Duration::ZERO);
    assert_eq!(options.retry.jitter, switchyard_retry::Jitter::None);
}
