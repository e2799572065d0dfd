//! Active health checks run in the background and drive eligibility; an endpoint taken
//! offline by hand stays offline; a slow check fails.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_balance::{EndpointError, Health, HealthCheckConfig, Strategy};

use support::{balance, check_service};

#[tokio::test(start_paused = true)]
async fn active_health_checks_drive_eligibility_in_the_background() {
    let balance = balance(Strategy::RoundRobin, &["a", "b"]);
    let up = Arc::new(AtomicBool::new(false));
    let config = HealthCheckConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        failure_threshold: 3,
        success_threshold: 2,
    };
    let checker = balance
        .check("a", check_service(Arc::clone(&up), Duration::ZERO), &config)
        .unwrap();
    // Checks at 0 s and 1 s fail: not yet unhealthy. No call is made: the checks run alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(balance.eligible(), ["a", "b"]);
    // The third, at 2 s, makes `a` unhealthy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(balance.eligible(), ["b"]);
    assert_eq!(balance.stats()[0].health, Health::Unhealthy);
    assert_eq!(balance.overall_health(), Health::Unhealthy);
    let report = balance.health_report();
    assert_eq!(report.overall, Health::Unhealthy);
    assert_eq!(
        report.endpoints,
        [
            ("a".to_owned(), Health::Unhealthy),
            ("b".to_owned(), Health::Unknown)
        ]
    );
    // It recovers: one pass (3 s) is not enough, the second (4 s) is.
    up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(balance.eligible(), ["b"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(balance.eligible(), ["a", "b"]);
    assert_eq!(balance.stats()[0].health, Health::Healthy);
    // Removing the endpoint ends its checker.
    balance.remove("a").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!checker.is_running());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_taken_offline_by_hand_stays_offline_while_checks_pass() {
    let balance = balance(Strategy::RoundRobin, &["a", "b"]);
    let config = HealthCheckConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        failure_threshold: 1,
        success_threshold: 1,
    };
    let _checker = balance
        .check(
            "a",
            check_service(Arc::new(AtomicBool::new(true)), Duration::ZERO),
            &config,
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(balance.stats()[0].health, Health::Healthy);

    balance.set_health("a", Health::Offline).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        balance.stats()[0].health,
        Health::Offline,
        "passing checks did not bring it back"
    );
    assert_eq!(balance.eligible(), ["b"]);

    // Another state set by hand releases it to its checks again.
    balance.set_health("a", Health::Unknown).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(balance.stats()[0].health, Health::Healthy);
    assert_eq!(balance.eligible(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_check_that_outlasts_its_timeout_fails() {
    let balance = balance(Strategy::RoundRobin, &["a", "b"]);
    let config = HealthCheckConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(100),
        failure_threshold: 2,
        success_threshold: 1,
    };
    let up = Arc::new(AtomicBool::new(true));
    let checker = balance
        .check("a", check_service(up, Duration::from_secs(5)), &config)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(balance.eligible(), ["b"]);
    // Removed while failing: its checker ends too.
    balance.remove("a").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!checker.is_running());
    assert!(matches!(
        balance.check("zz", check_service(Arc::default(), Duration::ZERO), &config),
        Err(EndpointError::NotFound(_))
    ));
}
