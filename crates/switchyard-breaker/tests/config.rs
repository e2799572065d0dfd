//! Config validation and the config's JSON form: every bad value is rejected with an error
//! naming its field, by `validate` and by the layer alike.

mod support;

use std::time::Duration;

use switchyard_breaker::{
    BreakerMode, CircuitBreakerConfig, CircuitBreakerLayer, FailureWindow, MAX_COUNT_WINDOW,
    MAX_TIME_BUCKETS, RateConfig, Trip,
};
use switchyard_core::ConfigError;

use support::ms;

/// The error `config` is rejected with; the layer must refuse it with the same error.
fn rejection(config: CircuitBreakerConfig) -> ConfigError {
    let err = config.validate().expect_err("the config is invalid");
    let from_layer =
        CircuitBreakerLayer::new("payments", config).expect_err("the layer validates too");
    assert_eq!(from_layer, err, "the layer reports what validate reports");
    err
}

/// A rate-based config around `rate`.
fn rate(rate: RateConfig) -> CircuitBreakerConfig {
    CircuitBreakerConfig::new(rate.into())
}

/// A count window of 10 calls at 50 %, judged from 5 calls: valid as it stands.
fn count_window() -> RateConfig {
    Trip::count_window(10, 50.0).with_minimum_calls(5)
}

// === One test per bad field ===

#[test]
fn a_zero_consecutive_failure_threshold_is_rejected() {
    let err = rejection(CircuitBreakerConfig::new(Trip::consecutive_failures(0)));

    assert_eq!(err.field(), "trip.consecutive_failures.threshold");
    assert_eq!(
        err.to_string(),
        "invalid `trip.consecutive_failures.threshold`: must be at least 1"
    );
}

#[test]
fn a_count_window_of_zero_or_above_the_maximum_is_rejected() {
    let err = rejection(rate(Trip::count_window(0, 50.0).with_minimum_calls(1)));
    assert_eq!(err.field(), "trip.failure_rate.window.count");
    assert_eq!(err.reason(), "must be between 1 and 1000000, got 0");

    let too_big = rejection(rate(Trip::count_window(MAX_COUNT_WINDOW + 1, 50.0)));
    assert_eq!(too_big.field(), "trip.failure_rate.window.count");
}

#[test]
fn a_time_window_with_zero_or_too_many_buckets_is_rejected() {
    let window = |buckets| FailureWindow::Time {
        duration: Duration::from_secs(10),
        buckets,
    };

    let err = rejection(rate(RateConfig::new(window(0), 50.0)));
    assert_eq!(err.field(), "trip.failure_rate.window.time.buckets");
    assert_eq!(err.reason(), "must be between 1 and 1000, got 0");

    let too_many = rejection(rate(RateConfig::new(window(MAX_TIME_BUCKETS + 1), 50.0)));
    assert_eq!(too_many.field(), "trip.failure_rate.window.time.buckets");
}

#[test]
fn a_time_window_with_less_than_a_millisecond_per_bucket_is_rejected() {
    let window = FailureWindow::Time {
        duration: ms(9),
        buckets: 10,
    };

    let err = rejection(rate(RateConfig::new(window, 50.0)));

    assert_eq!(err.field(), "trip.failure_rate.window.time.duration");
    assert_eq!(err.reason(), "must give each bucket at least 1ms");
}

#[test]
fn a_time_window_longer_than_an_hour_is_rejected() {
    let window = FailureWindow::Time {
        duration: Duration::from_secs(3601),
        buckets: 10,
    };

    let err = rejection(rate(RateConfig::new(window, 50.0)));

    assert_eq!(err.field(), "trip.failure_rate.window.time.duration");
    assert_eq!(err.reason(), "must be at most 1h");
}

#[test]
fn a_failure_rate_threshold_outside_zero_to_a_hundred_is_rejected() {
    for bad in [0.0, -1.0, 100.5, f64::NAN, f64::INFINITY] {
        let mut config = count_window();
        config.failure_rate_threshold = bad;

        let err = rejection(rate(config));

        assert_eq!(
            err.field(),
            "trip.failure_rate.failure_rate_threshold",
            "{bad}"
        );
        assert_eq!(
            err.reason(),
            format!("must be a percentage in (0, 100], got {bad}")
        );
    }
}

#[test]
fn a_slow_call_rate_threshold_outside_zero_to_a_hundred_is_rejected() {
    for bad in [0.0, 101.0, f64::NAN] {
        let err = rejection(rate(count_window().with_slow_calls(ms(100), bad)));

        assert_eq!(
            err.field(),
            "trip.failure_rate.slow_call_rate_threshold",
            "{bad}"
        );
    }
}

#[test]
fn a_zero_slow_call_duration_is_rejected() {
    let err = rejection(rate(count_window().with_slow_calls(Duration::ZERO, 50.0)));

    assert_eq!(err.field(), "trip.failure_rate.slow_call_duration");
    assert_eq!(err.reason(), "must be greater than zero");
}

#[test]
fn zero_minimum_calls_is_rejected() {
    let err = rejection(rate(count_window().with_minimum_calls(0)));

    assert_eq!(err.field(), "trip.failure_rate.minimum_calls");
    assert_eq!(err.reason(), "must be at least 1");
}

#[test]
fn minimum_calls_above_the_count_window_is_rejected() {
    let err = rejection(rate(Trip::count_window(4, 50.0).with_minimum_calls(5)));

    assert_eq!(err.field(), "trip.failure_rate.minimum_calls");
    assert_eq!(
        err.reason(),
        "must not exceed the window size (4), or the breaker can never open"
    );
}

#[test]
fn a_zero_wait_in_open_is_rejected() {
    let err = rejection(CircuitBreakerConfig::default().with_wait_in_open(Duration::ZERO));

    assert_eq!(err.field(), "wait_in_open");
    assert_eq!(err.reason(), "must be greater than zero");
}

#[test]
fn a_wait_multiplier_below_one_or_not_finite_is_rejected() {
    for bad in [0.5, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        let config = CircuitBreakerConfig::default()
            .with_exponential_open_wait(bad, Duration::from_secs(300));

        let err = rejection(config);

        assert_eq!(err.field(), "wait_in_open_multiplier", "{bad}");
        assert_eq!(
            err.reason(),
            format!("must be a finite number >= 1.0, got {bad}")
        );
    }
}

#[test]
fn a_max_wait_in_open_below_wait_in_open_is_rejected() {
    let config = CircuitBreakerConfig::default()
        .with_wait_in_open(Duration::from_secs(10))
        .with_exponential_open_wait(2.0, Duration::from_secs(5));

    let err = rejection(config);

    assert_eq!(err.field(), "max_wait_in_open");
    assert_eq!(err.reason(), "must be at least `wait_in_open`");
}

#[test]
fn zero_permitted_calls_in_half_open_is_rejected() {
    let err = rejection(CircuitBreakerConfig::default().with_half_open(0, 1));

    assert_eq!(err.field(), "permitted_calls_in_half_open");
    assert_eq!(err.reason(), "must be at least 1");
}

#[test]
fn zero_successes_to_close_is_rejected() {
    let err = rejection(CircuitBreakerConfig::default().with_half_open(1, 0));

    assert_eq!(err.field(), "successes_to_close");
    assert_eq!(err.reason(), "must be at least 1");
}

#[test]
fn a_zero_max_wait_in_half_open_is_rejected() {
    let err = rejection(CircuitBreakerConfig::default().with_max_wait_in_half_open(Duration::ZERO));

    assert_eq!(err.field(), "max_wait_in_half_open");
    assert_eq!(err.reason(), "must be greater than zero");
}

#[test]
fn the_trip_is_checked_before_the_rest() {
    let config = CircuitBreakerConfig::new(Trip::consecutive_failures(0))
        .with_wait_in_open(Duration::ZERO)
        .with_half_open(0, 0);

    assert_eq!(
        rejection(config).field(),
        "trip.consecutive_failures.threshold"
    );
}

#[test]
fn values_on_the_edge_of_each_range_are_accepted() {
    let edges = [
        rate(Trip::count_window(1, 100.0).with_minimum_calls(1)),
        rate(Trip::count_window(MAX_COUNT_WINDOW, 0.001).with_minimum_calls(MAX_COUNT_WINDOW)),
        rate(RateConfig::new(
            FailureWindow::Time {
                duration: ms(1000),
                buckets: MAX_TIME_BUCKETS,
            },
            50.0,
        )),
        rate(count_window().with_slow_calls(Duration::from_nanos(1), 100.0)),
        CircuitBreakerConfig::default()
            .with_wait_in_open(ms(1))
            .with_exponential_open_wait(1.0, ms(1))
            .with_half_open(1, 1)
            .with_max_wait_in_half_open(Duration::from_nanos(1)),
    ];
    for config in edges {
        assert_eq!(config.validate(), Ok(()), "{config:?}");
        assert!(CircuitBreakerLayer::new("payments", config).is_ok());
    }
}

// === Defaults and JSON ===

#[test]
fn the_default_config_is_the_seeds() {
    let config = CircuitBreakerConfig::default();

    assert_eq!(config.trip, Trip::consecutive_failures(5));
    assert_eq!(config.wait_in_open, Duration::from_secs(30));
    assert_eq!(config.wait_in_open_multiplier, 1.0);
    assert_eq!(config.permitted_calls_in_half_open, 1);
    assert_eq!(config.successes_to_close, 2);
    // Beyond the documented model: a hung probe cannot wedge the breaker by default.
    assert_eq!(config.max_wait_in_half_open, Some(Duration::from_secs(60)));
    assert_eq!(config.mode, BreakerMode::FailFast);
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(
        serde_json::from_str::<CircuitBreakerConfig>("{}").unwrap(),
        config
    );
}

#[test]
fn a_full_config_round_trips_through_json_with_humane_durations() {
    let config = CircuitBreakerConfig::new(
        Trip::time_window(Duration::from_secs(60), 40.0)
            .with_minimum_calls(20)
            .with_slow_calls(ms(250), 80.0)
            .into(),
    )
    .with_wait_in_open(Duration::from_secs(10))
    .with_exponential_open_wait(2.0, Duration::from_secs(120))
    .with_half_open(3, 2)
    .with_max_wait_in_half_open(Duration::from_secs(5))
    .with_mode(BreakerMode::Backpressure);
    config.validate().unwrap();

    let json = serde_json::to_value(&config).unwrap();

    assert_eq!(
        json,
        serde_json::json!({
            "trip": { "failure_rate": {
                "window": { "time": { "duration": "1m", "buckets": 10 } },
                "failure_rate_threshold": 40.0,
                "slow_call_rate_threshold": 80.0,
                "slow_call_duration": "250ms",
                "minimum_calls": 20
            } },
            "wait_in_open": "10s",
            "wait_in_open_multiplier": 2.0,
            "max_wait_in_open": "2m",
            "permitted_calls_in_half_open": 3,
            "successes_to_close": 2,
            "max_wait_in_half_open": "5s",
            "mode": "backpressure"
        })
    );
    let back: CircuitBreakerConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn a_hand_written_config_reads_with_its_defaults() {
    let config: CircuitBreakerConfig = serde_json::from_str(
        r#"{
            "trip": { "failure_rate": { "window": { "count": 100 } } },
            "wait_in_open": "1m 30s"
        }"#,
    )
    .unwrap();

    let expected = CircuitBreakerConfig::new(Trip::count_window(100, 50.0).into())
        .with_wait_in_open(Duration::from_secs(90));
    assert_eq!(config, expected);
    assert_eq!(config.validate(), Ok(()));
    let consecutive: CircuitBreakerConfig =
        serde_json::from_str(r#"{ "trip": { "consecutive_failures": { "threshold": 3 } } }"#)
            .unwrap();
    assert_eq!(consecutive.trip, Trip::consecutive_failures(3));
}

#[test]
fn unknown_fields_are_rejected_naming_the_field() {
    let cases = [
        (r#"{ "wait_in_opne": "1s" }"#, "wait_in_opne"),
        (
            r#"{ "trip": { "failure_rate": { "window": { "count": 10 }, "threshold": 50 } } }"#,
            "threshold",
        ),
        (
            r#"{ "trip": { "failure_rate": { "window": { "time": { "duration": "1s", "slices": 4 } } } } }"#,
            "slices",
        ),
        (
            r#"{ "trip": { "consecutive_failures": { "threshold": 3, "limit": 4 } } }"#,
            "limit",
        ),
    ];
    for (json, field) in cases {
        let err = serde_json::from_str::<CircuitBreakerConfig>(json).expect_err(json);

        assert!(
            err.to_string()
                .contains(&format!("unknown field `{field}`")),
            "{json}: {err}"
        );
    }
}

#[test]
fn a_duration_that_is_not_humane_is_rejected() {
    let parse = |json| {
        serde_json::from_str::<CircuitBreakerConfig>(json)
            .unwrap_err()
            .to_string()
    };

    assert_eq!(
        parse(r#"{ "wait_in_open": "soon" }"#),
        "invalid value: string \"soon\", expected a duration at line 1 column 24"
    );
    assert_eq!(
        parse(r#"{ "wait_in_open": 30 }"#),
        "invalid type: integer `30`, expected a duration at line 1 column 20"
    );
}
