//! Bad retry configs, each refused with an error naming its field.

use switchyard_retry::{RetryConfig, RetryLayer, http::HttpRetryLayer};

fn field(json: &str) -> String {
    let config: RetryConfig = serde_json::from_str(json).unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(
        RetryLayer::new("r", &config).unwrap_err(),
        err,
        "the layer checks too"
    );
    assert_eq!(HttpRetryLayer::new("r", &config).unwrap_err(), err);
    err.field().to_owned()
}

#[test]
fn the_default_config_is_valid_and_round_trips() {
    let config = RetryConfig::default();
    config.validate().unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<RetryConfig>(&json).unwrap(), config);
    assert_eq!(serde_json::from_str::<RetryConfig>("{}").unwrap(), config);
}

#[test]
fn each_bad_field_is_named() {
    assert_eq!(field(r#"{"max_attempts": 0}"#), "max_attempts");
    assert_eq!(field(r#"{"max_attempts": 101}"#), "max_attempts");
    assert_eq!(
        field(r#"{"backoff": {"multiplier": 0.5}}"#),
        "backoff.multiplier"
    );
    assert_eq!(
        field(r#"{"backoff": {"initial": "30s"}}"#),
        "backoff.initial"
    );
    assert_eq!(field(r#"{"backoff": {"max": "2h"}}"#), "backoff.max");
    assert_eq!(field(r#"{"budget": {"ttl": "500ms"}}"#), "budget.ttl");
    assert_eq!(field(r#"{"budget": {"ttl": "61s"}}"#), "budget.ttl");
    assert_eq!(
        field(r#"{"budget": {"retry_ratio": -0.1}}"#),
        "budget.retry_ratio"
    );
    assert_eq!(
        field(r#"{"budget": {"retry_ratio": 1001}}"#),
        "budget.retry_ratio"
    );
    assert_eq!(
        field(r#"{"budget": {"min_per_sec": 4294967295}}"#),
        "budget.min_per_sec"
    );
    assert_eq!(field(r#"{"max_body_bytes": 1000000000}"#), "max_body_bytes");
    assert_eq!(
        field(r#"{"methods": ["GET", "NOT A METHOD"]}"#),
        "methods[1]"
    );
}

#[test]
fn unknown_fields_and_unreadable_values_are_refused_by_name() {
    let unknown = serde_json::from_str::<RetryConfig>(r#"{"max_atempts": 3}"#).unwrap_err();
    assert!(unknown.to_string().contains("max_atempts"), "{unknown}");
    let jitter = serde_json::from_str::<RetryConfig>(r#"{"jitter": "wobbly"}"#).unwrap_err();
    assert!(jitter.to_string().contains("wobbly"), "{jitter}");
    let duration =
        serde_json::from_str::<RetryConfig>(r#"{"backoff": {"initial": "soon"}}"#).unwrap_err();
    assert!(
        duration.to_string().contains("soon") || duration.to_string().contains("initial"),
        "{duration}"
    );
}

#[test]
fn a_null_budget_turns_it_off() {
    let config: RetryConfig = serde_json::from_str(r#"{"budget": null}"#).unwrap();
    assert_eq!(config.budget, None);
    config.validate().unwrap();
}
