//! Config validation: every bad value is rejected with an error naming its field, by
//! `validate` and by the method that takes the config alike (`with_outlier`, `check`, `add`,
//! `follow`).

mod support;

use std::time::Duration;

use switchyard_balance::{
    Balance, EndpointConfig, EndpointError, FailureRate, Health, HealthCheckConfig, OutlierConfig,
    Strategy,
};
use switchyard_core::ConfigError;
use tower::{BoxError, service_fn};

use support::{Req, ok};

fn balancer() -> Balance<Req, String> {
    Balance::new("test", Strategy::RoundRobin)
}

/// The error `config` is rejected with; `with_outlier` must refuse it with the same error.
fn outlier_rejection(config: OutlierConfig) -> ConfigError {
    let err = config.validate().expect_err("the config is invalid");
    let from_balancer = balancer()
        .with_outlier(config)
        .expect_err("with_outlier validates too");
    assert_eq!(
        from_balancer, err,
        "with_outlier reports what validate reports"
    );
    err
}

/// The error `config` is rejected with; `check` must refuse it with the same error.
fn health_rejection(config: &HealthCheckConfig) -> ConfigError {
    let err = config.validate().expect_err("the config is invalid");
    let balance = balancer();
    balance
        .add("a", ok("a"), &EndpointConfig::default())
        .unwrap();
    let check = service_fn(|()| async { Ok::<_, BoxError>(Health::Healthy) });
    let from_balancer = balance
        .check("a", check, config)
        .expect_err("check validates too");
    assert_eq!(from_balancer, EndpointError::InvalidConfig(err.clone()));
    err
}

fn rate(threshold_percent: u8, minimum_calls: u32) -> OutlierConfig {
    OutlierConfig {
        failure_rate: Some(FailureRate {
            threshold_percent,
            minimum_calls,
        }),
        ..OutlierConfig::default()
    }
}

// === One test per bad field: outlier detection ===

#[test]
fn zero_consecutive_failures_are_rejected() {
    let err = outlier_rejection(OutlierConfig {
        consecutive_failures: 0,
        ..OutlierConfig::default()
    });
    assert_eq!(err.field(), "outlier.consecutive_failures");
    assert_eq!(
        err.to_string(),
        "invalid `outlier.consecutive_failures`: must be at least 1"
    );
}

#[test]
fn a_zero_base_ejection_is_rejected() {
    let err = outlier_rejection(OutlierConfig {
        base_ejection: Duration::ZERO,
        ..OutlierConfig::default()
    });
    assert_eq!(err.field(), "outlier.base_ejection");
    assert_eq!(err.reason(), "must be greater than zero");
}

#[test]
fn a_max_ejection_below_the_base_ejection_is_rejected() {
    let err = outlier_rejection(OutlierConfig {
        base_ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(29),
        ..OutlierConfig::default()
    });
    assert_eq!(err.field(), "outlier.max_ejection");
    assert_eq!(err.reason(), "must be at least `base_ejection`");
}

#[test]
fn a_max_ejection_percent_above_100_is_rejected() {
    let err = outlier_rejection(OutlierConfig {
        max_ejection_percent: 101,
        ..OutlierConfig::default()
    });
    assert_eq!(err.field(), "outlier.max_ejection_percent");
    assert_eq!(err.reason(), "must be at most 100, got 101");
}

#[test]
fn a_failure_rate_threshold_outside_1_to_100_is_rejected() {
    for bad in [0, 101] {
        let err = outlier_rejection(rate(bad, 20));
        assert_eq!(err.field(), "outlier.failure_rate.threshold_percent");
        assert_eq!(err.reason(), format!("must be from 1 to 100, got {bad}"));
    }
}

#[test]
fn a_failure_rate_window_of_zero_calls_is_rejected() {
    let err = outlier_rejection(rate(50, 0));
    assert_eq!(err.field(), "outlier.failure_rate.minimum_calls");
    assert_eq!(err.reason(), "must be at least 1");
}

// === One test per bad field: health checks ===

#[tokio::test]
async fn a_zero_check_interval_is_rejected() {
    let err = health_rejection(&HealthCheckConfig {
        interval: Duration::ZERO,
        ..HealthCheckConfig::default()
    });
    assert_eq!(err.field(), "health_check.interval");
    assert_eq!(err.reason(), "must be greater than zero");
}

#[tokio::test]
async fn a_zero_check_timeout_is_rejected() {
    let err = health_rejection(&HealthCheckConfig {
        timeout: Duration::ZERO,
        ..HealthCheckConfig::default()
    });
    assert_eq!(err.field(), "health_check.timeout");
    assert_eq!(err.reason(), "must be greater than zero");
}

#[tokio::test]
async fn a_zero_failure_threshold_is_rejected() {
    let err = health_rejection(&HealthCheckConfig {
        failure_threshold: 0,
        ..HealthCheckConfig::default()
    });
    assert_eq!(err.field(), "health_check.failure_threshold");
    assert_eq!(
        err.to_string(),
        "invalid `health_check.failure_threshold`: must be at least 1"
    );
}

#[tokio::test]
async fn a_zero_success_threshold_is_rejected() {
    let err = health_rejection(&HealthCheckConfig {
        success_threshold: 0,
        ..HealthCheckConfig::default()
    });
    assert_eq!(err.field(), "health_check.success_threshold");
    assert_eq!(err.reason(), "must be at least 1");
}

// === One test per bad field: endpoints ===

#[tokio::test]
async fn a_zero_weight_is_rejected_by_add_and_follow() {
    let config = EndpointConfig::default().with_weight(0);
    let err = config.validate().expect_err("the config is invalid");
    assert_eq!(err.field(), "endpoint.weight");
    assert_eq!(
        err.reason(),
        "must be at least 1 (to drain an endpoint, disable it)"
    );

    let balance = balancer();
    assert_eq!(
        balance.add("a", ok("a"), &config),
        Err(EndpointError::InvalidConfig(err.clone()))
    );
    assert!(balance.stats().is_empty(), "nothing was added");
    let changes = futures::stream::empty::<
        Result<tower::discover::Change<&str, support::Backend>, std::convert::Infallible>,
    >();
    assert_eq!(balance.follow(changes, config).map(drop), Err(err));
}

// === What is accepted ===

#[tokio::test]
async fn defaults_and_boundary_values_are_accepted() {
    OutlierConfig::default().validate().unwrap();
    HealthCheckConfig::default().validate().unwrap();
    EndpointConfig::default().validate().unwrap();
    for config in [
        OutlierConfig {
            consecutive_failures: 1,
            base_ejection: Duration::from_nanos(1),
            max_ejection: Duration::from_nanos(1),
            max_ejection_percent: 0,
            failure_rate: None,
        },
        OutlierConfig {
            max_ejection_percent: 100,
            ..rate(100, 1)
        },
        rate(1, u32::MAX),
    ] {
        config.validate().unwrap();
        balancer().with_outlier(config).unwrap();
    }
    let balance = balancer();
    balance
        .add("a", ok("a"), &EndpointConfig::default().with_weight(1))
        .unwrap();
    let check = service_fn(|()| async { Ok::<_, BoxError>(Health::Healthy) });
    let tight = HealthCheckConfig {
        interval: Duration::from_nanos(1),
        timeout: Duration::from_nanos(1),
        failure_threshold: 1,
        success_threshold: 1,
    };
    balance.check("a", check, &tight).unwrap().stop();
}

#[test]
fn a_config_read_from_json_is_validated_too() {
    // Serde accepts any number; `validate` (and `with_outlier`) names the one that cannot work.
    let config: OutlierConfig = serde_json::from_value(serde_json::json!({
        "consecutive_failures": 3,
        "failure_rate": { "threshold_percent": 0 },
    }))
    .unwrap();
    let err = outlier_rejection(config);
    assert_eq!(err.field(), "outlier.failure_rate.threshold_percent");
}
