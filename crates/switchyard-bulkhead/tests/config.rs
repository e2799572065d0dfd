//! Config validation and the config's JSON form: every bad value is rejected with an error
//! naming its field, by `validate`, the controller and the layer alike; each policy has one
//! JSON form that round-trips.

mod support;

use serde_json::{Value, json};
use switchyard_bulkhead::{
    AdmissionController, BulkheadConfig, BulkheadLayer, BulkheadPolicy, MAX_CONCURRENT_CALLS,
};
use switchyard_core::ConfigError;

use support::{NAME, queue};

/// The error `config` is rejected with; the controller and the layer must refuse it with the
/// same error.
fn rejection(config: &BulkheadConfig) -> ConfigError {
    let err = config.validate().expect_err("the config is invalid");
    let from_layer = BulkheadLayer::new(NAME, config).expect_err("the layer validates too");
    assert_eq!(from_layer, err, "the layer reports what validate reports");
    let from_controller =
        AdmissionController::new(NAME, config).expect_err("the controller validates too");
    assert_eq!(from_controller, err);
    err
}

// === One test per bad field ===

#[test]
fn zero_max_concurrent_calls_is_rejected() {
    let err = rejection(&BulkheadConfig::new(0, BulkheadPolicy::HardReject));

    assert_eq!(err.field(), "max_concurrent_calls");
    assert_eq!(
        err.to_string(),
        "invalid `max_concurrent_calls`: must be at least 1"
    );
}

#[test]
fn max_concurrent_calls_above_the_maximum_is_rejected() {
    let err = rejection(&BulkheadConfig::new(
        MAX_CONCURRENT_CALLS + 1,
        BulkheadPolicy::HardReject,
    ));

    assert_eq!(err.field(), "max_concurrent_calls");
    assert_eq!(err.reason(), "must be at most 16777216");
}

#[test]
fn max_concurrent_calls_at_the_maximum_is_accepted_under_every_policy() {
    let policies = [
        BulkheadPolicy::HardReject,
        queue(1, 1),
        BulkheadPolicy::SoftAllow,
        BulkheadPolicy::SoftAllowWithSignal,
    ];
    for policy in policies {
        let config = BulkheadConfig::new(MAX_CONCURRENT_CALLS, policy);
        let controller = AdmissionController::new(NAME, &config).expect("the maximum is valid");
        assert_eq!(
            controller.stats().max_concurrent_calls,
            MAX_CONCURRENT_CALLS
        );
        let _permit = controller.try_acquire().expect("a free slot");
    }
}

#[test]
fn a_zero_queue_capacity_is_rejected() {
    let err = rejection(&BulkheadConfig::new(4, queue(0, 100)));

    assert_eq!(err.field(), "policy.queue.capacity");
    assert_eq!(
        err.reason(),
        "must be at least 1 (use `hard_reject` for no queue)"
    );
}

#[test]
fn a_zero_queue_max_wait_is_rejected() {
    let err = rejection(&BulkheadConfig::new(4, queue(10, 0)));

    assert_eq!(err.field(), "policy.queue.max_wait");
    assert_eq!(
        err.reason(),
        "must be greater than zero (use `hard_reject` for no wait)"
    );
}

#[test]
fn the_first_bad_field_is_the_one_reported() {
    let err = rejection(&BulkheadConfig::new(0, queue(0, 0)));
    assert_eq!(err.field(), "max_concurrent_calls");

    let err = rejection(&BulkheadConfig::new(1, queue(0, 0)));
    assert_eq!(err.field(), "policy.queue.capacity");
}

// === Defaults ===

#[test]
fn defaults_are_25_slots_with_hard_reject() {
    let config = BulkheadConfig::default();

    assert_eq!(config.max_concurrent_calls, 25);
    assert_eq!(config.policy, BulkheadPolicy::HardReject);
    assert_eq!(BulkheadPolicy::default(), BulkheadPolicy::HardReject);
    config.validate().expect("the defaults are valid");
    let empty: BulkheadConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, config, "every field has its default in JSON");
    let policy_only: BulkheadConfig = serde_json::from_str(r#"{"policy": "soft_allow"}"#).unwrap();
    assert_eq!(policy_only.max_concurrent_calls, 25);
    assert_eq!(
        serde_json::to_value(&config).unwrap(),
        json!({"max_concurrent_calls": 25, "policy": "hard_reject"})
    );
}

// === JSON forms ===

/// Parses `policy` as a config's policy, checks it reads as `expected` and serialises back to
/// the same JSON.
fn round_trips(policy: &Value, expected: BulkheadPolicy) {
    let json = json!({"max_concurrent_calls": 10, "policy": policy});
    let config: BulkheadConfig =
        serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{policy} parses: {e}"));
    assert_eq!(config, BulkheadConfig::new(10, expected));
    assert_eq!(serde_json::to_value(&config).unwrap(), json, "{policy}");
}

#[test]
fn hard_reject_round_trips_through_json() {
    round_trips(&json!("hard_reject"), BulkheadPolicy::HardReject);
}

#[test]
fn queue_round_trips_through_json_with_a_humane_max_wait() {
    round_trips(
        &json!({"queue": {"capacity": 3, "max_wait": "250ms"}}),
        queue(3, 250),
    );

    let config: BulkheadConfig =
        serde_json::from_str(r#"{"policy": {"queue": {"capacity": 1, "max_wait": "1m 30s"}}}"#)
            .unwrap();
    assert_eq!(config.policy, queue(1, 90_000));
}

#[test]
fn soft_allow_round_trips_through_json() {
    round_trips(&json!("soft_allow"), BulkheadPolicy::SoftAllow);
}

#[test]
fn soft_allow_with_signal_round_trips_through_json() {
    round_trips(
        &json!("soft_allow_with_signal"),
        BulkheadPolicy::SoftAllowWithSignal,
    );
}

#[test]
fn policy_names_are_stable() {
    let names = [
        BulkheadPolicy::HardReject,
        queue(1, 1),
        BulkheadPolicy::SoftAllow,
        BulkheadPolicy::SoftAllowWithSignal,
    ]
    .map(BulkheadPolicy::as_str);
    assert_eq!(
        names,
        [
            "hard_reject",
            "queue",
            "soft_allow",
            "soft_allow_with_signal"
        ]
    );
}

// === Bad JSON ===

/// The message `json` is refused with when read as a config.
fn parse_error(json: &str) -> String {
    serde_json::from_str::<BulkheadConfig>(json)
        .expect_err("the JSON is refused")
        .to_string()
}

#[test]
fn unknown_config_fields_are_rejected() {
    let err = parse_error(r#"{"max_concurrent_call": 10}"#);
    assert!(err.contains("unknown field `max_concurrent_call`"), "{err}");
}

#[test]
fn unknown_queue_fields_are_rejected() {
    let err = parse_error(
        r#"{"policy": {"queue": {"capacity": 3, "max_wait": "1s", "max_wait_ms": 1000}}}"#,
    );
    assert!(err.contains("unknown field `max_wait_ms`"), "{err}");
}

#[test]
fn unknown_policies_are_rejected() {
    for policy in [r#""hard-reject""#, r#""HardReject""#, r#"{"lifo": {}}"#] {
        let err = parse_error(&format!(r#"{{"policy": {policy}}}"#));
        assert!(err.contains("unknown variant"), "{policy}: {err}");
    }
}

#[test]
fn a_queue_without_its_fields_is_rejected() {
    let err = parse_error(r#"{"policy": {"queue": {"capacity": 3}}}"#);
    assert!(err.contains("missing field `max_wait`"), "{err}");

    let err = parse_error(r#"{"policy": {"queue": {"max_wait": "1s"}}}"#);
    assert!(err.contains("missing field `capacity`"), "{err}");
}

#[test]
fn a_max_wait_without_a_unit_is_rejected() {
    let err = parse_error(r#"{"policy": {"queue": {"capacity": 3, "max_wait": "250"}}}"#);
    assert!(
        err.contains("invalid value: string \"250\", expected a duration"),
        "{err}"
    );
}

#[test]
fn negative_or_fractional_counts_are_rejected() {
    for json in [
        r#"{"max_concurrent_calls": -1}"#,
        r#"{"max_concurrent_calls": 2.5}"#,
        r#"{"policy": {"queue": {"capacity": -3, "max_wait": "1s"}}}"#,
    ] {
        let err = parse_error(json);
        assert!(err.contains("invalid"), "{json}: {err}");
    }
}
