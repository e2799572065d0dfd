//! Passive outlier ejection through the balancer: ejection for a growing time and the return,
//! the cap on the share ejected, the failure rate. Every timing behaviour runs on paused tokio
//! time.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_balance::{Balance, EndpointConfig, OutlierConfig, Strategy};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt, service_fn};

use support::{Backend, Req, backend, call, ok, prefer, preferring, shares};

#[tokio::test(start_paused = true)]
async fn failing_endpoints_are_ejected_for_a_growing_time_and_return() {
    let outlier = OutlierConfig {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(15),
        max_ejection_percent: 50,
        failure_rate: None,
    };
    let failing = Arc::new(AtomicBool::new(true));
    let balance = Balance::new("test", Strategy::RoundRobin)
        .with_outlier(outlier)
        .unwrap();
    balance
        .add(
            "bad",
            backend("bad", Duration::ZERO, Arc::clone(&failing)),
            &EndpointConfig::default(),
        )
        .unwrap();
    balance
        .add("good", ok("good"), &EndpointConfig::default())
        .unwrap();

    // Round robin alternates; the third failure of `bad` ejects it.
    let mut failures = 0;
    while failures < 3 {
        if call(&balance, None).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(balance.eligible(), ["good"]);
    assert!(balance.stats()[0].ejected);
    for _ in 0..5 {
        assert_eq!(call(&balance, None).await.unwrap(), "good");
    }
    // Back after the first ejection's 10 s.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(balance.eligible(), ["bad", "good"]);
    // Still failing: ejected again, for 2 × 10 s capped at 15 s.
    let mut failures = 0;
    while failures < 3 {
        if call(&balance, None).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(balance.eligible(), ["good"]);
    tokio::time::advance(Duration::from_secs(14)).await;
    assert_eq!(balance.eligible(), ["good"]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(balance.eligible(), ["bad", "good"]);
    // Recovered: it serves again.
    failing.store(false, Ordering::SeqCst);
    let counts = shares_of(&balance, 4).await;
    assert_eq!(counts["bad"], 2);
    // In for longer than `max_ejection`: a new failure streak starts over at 10 s.
    tokio::time::advance(Duration::from_secs(16)).await;
    failing.store(true, Ordering::SeqCst);
    let mut failures = 0;
    while failures < 3 {
        if call(&balance, None).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(balance.eligible(), ["good"]);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(balance.eligible(), ["bad", "good"]);
}

async fn shares_of(balance: &Balance<Req, String>, calls: usize) -> HashMap<String, usize> {
    shares(balance, calls).await
}

#[tokio::test(start_paused = true)]
async fn the_cap_keeps_some_endpoints_in() {
    let outlier = OutlierConfig {
        consecutive_failures: 1,
        max_ejection_percent: 50,
        ..OutlierConfig::default()
    };
    let down = Arc::new(AtomicBool::new(true));
    let balance = Balance::new("test", Strategy::RoundRobin)
        .with_outlier(outlier)
        .unwrap();
    for name in ["a", "b", "c", "d"] {
        balance
            .add(
                name,
                backend(name, Duration::ZERO, Arc::clone(&down)),
                &EndpointConfig::default(),
            )
            .unwrap();
    }
    for _ in 0..20 {
        assert!(call(&balance, None).await.is_err());
    }
    // Every endpoint failed, but at most half are out.
    assert_eq!(balance.eligible().len(), 2);
    assert_eq!(balance.stats().iter().filter(|s| s.ejected).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_high_failure_rate_ejects_without_consecutive_failures() {
    // `flaky` fails every other call: never three in a row, but half its calls.
    let outlier = OutlierConfig {
        consecutive_failures: 3,
        failure_rate: Some(switchyard_balance::FailureRate {
            threshold_percent: 40,
            minimum_calls: 10,
        }),
        ..OutlierConfig::default()
    };
    let flip = Arc::new(AtomicBool::new(false));
    let flaky: Backend = {
        let flip = Arc::clone(&flip);
        BoxCloneSyncService::new(service_fn(move |_: Req| {
            let fail = !flip.fetch_xor(true, Ordering::SeqCst);
            async move {
                if fail {
                    Err::<String, BoxError>("flaky".into())
                } else {
                    Ok("flaky".to_owned())
                }
            }
        }))
    };
    let balance = Balance::new("test", Strategy::RoundRobin)
        .with_outlier(outlier)
        .unwrap();
    balance
        .add("flaky", flaky, &EndpointConfig::default())
        .unwrap();
    balance
        .add("good", ok("good"), &EndpointConfig::default())
        .unwrap();
    balance
        .add("fine", ok("fine"), &EndpointConfig::default())
        .unwrap();
    // Nine calls to flaky: a window not yet full.
    for _ in 0..27 {
        let _ = call(&balance, None).await;
    }
    assert_eq!(balance.eligible().len(), 3);
    // The tenth fills it at 50% failures: ejected.
    for _ in 0..3 {
        let _ = call(&balance, None).await;
    }
    assert_eq!(balance.eligible(), ["good", "fine"]);
}

#[tokio::test(start_paused = true)]
async fn a_success_between_failures_ends_the_streak() {
    let outlier = OutlierConfig {
        consecutive_failures: 3,
        max_ejection_percent: 50,
        ..OutlierConfig::default()
    };
    let failing = Arc::new(AtomicBool::new(true));
    let balance = preferring().with_outlier(outlier).unwrap();
    balance
        .add(
            "flaky",
            backend("flaky", Duration::ZERO, Arc::clone(&failing)),
            &EndpointConfig::default(),
        )
        .unwrap();
    balance
        .add("good", ok("good"), &EndpointConfig::default())
        .unwrap();
    for fail in [true, true, false, true, true] {
        failing.store(fail, Ordering::SeqCst);
        let result = balance.clone().oneshot(prefer("flaky")).await;
        assert_eq!(result.is_err(), fail);
    }
    assert_eq!(
        balance.eligible(),
        ["flaky", "good"],
        "never three failures in a row"
    );
    // The third in a row ejects it.
    balance.clone().oneshot(prefer("flaky")).await.unwrap_err();
    assert_eq!(balance.eligible(), ["good"]);
}
