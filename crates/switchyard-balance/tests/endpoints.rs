//! Endpoints managed at runtime: no endpoint eligible, changes under load, the stats.

mod support;

use std::sync::Arc;
use std::time::Duration;

use switchyard_balance::{Balance, EndpointConfig, EndpointError, NoAvailableEndpoint, Strategy};
use switchyard_core::{RejectionKind, find_cause, find_rejection};
use tower::ServiceExt;

use support::{Req, backend, balance, call, ok};

#[tokio::test]
async fn with_nothing_eligible_calls_get_a_typed_503() {
    let balance = balance(Strategy::RoundRobin, &["a"]);
    balance.disable("a").unwrap();
    let err = call(&balance, None).await.unwrap_err();
    assert_eq!(err.to_string(), "no available endpoint: test");
    assert!(find_cause::<NoAvailableEndpoint>(&*err).is_some());
    let rejection = find_rejection(&*err).unwrap();
    assert_eq!(rejection.kind(), RejectionKind::NoAvailableEndpoint);
    assert_eq!(rejection.kind().http_status(), 503);
    balance.enable("a").unwrap();
    assert_eq!(call(&balance, None).await.unwrap(), "a");

    let empty: Balance<Req, String> = Balance::new("empty", Strategy::Random);
    assert!(call(&empty, None).await.is_err());
    assert_eq!(
        balance.add("a", ok("a"), &EndpointConfig::default()),
        Err(EndpointError::Duplicate("a".into()))
    );
    assert_eq!(
        balance.remove("zz"),
        Err(EndpointError::NotFound("zz".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn endpoints_change_under_load_without_failing_calls_in_flight() {
    let balance = Balance::new("test", Strategy::RoundRobin);
    balance
        .add(
            "old",
            backend("old", Duration::from_secs(1), Arc::default()),
            &EndpointConfig::default(),
        )
        .unwrap();
    let in_flight = tokio::spawn(balance.clone().oneshot((None, 0)));
    tokio::task::yield_now().await;
    assert_eq!(balance.stats()[0].in_flight, 1);
    balance
        .add("new", ok("new"), &EndpointConfig::default())
        .unwrap();
    balance.remove("old").unwrap();
    assert_eq!(call(&balance, None).await.unwrap(), "new");
    assert_eq!(in_flight.await.unwrap().unwrap(), "old");
}

#[tokio::test]
async fn stats_serialise_with_the_seeds_fields() {
    let balance = balance(Strategy::RoundRobin, &["a"]);
    call(&balance, None).await.unwrap();
    let json = serde_json::to_value(&balance.stats()[0]).unwrap();
    for field in [
        "name",
        "weight",
        "priority",
        "enabled",
        "health",
        "ejected",
        "in_flight",
        "total_requests",
        "successful_requests",
        "failed_requests",
        "success_rate",
        "latency",
        "last_used_ago",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    assert_eq!(json["total_requests"], 1);
    assert_eq!(json["success_rate"], 100.0);
    assert_eq!(json["health"], "unknown");
}
