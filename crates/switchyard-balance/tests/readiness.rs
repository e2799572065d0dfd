//! Readiness, the tower way: a not-ready endpoint leaves the pick while another is ready, a
//! background task brings it back, `poll_ready` waits only while none is ready, and a call
//! waiting on an endpoint that leaves picks again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_balance::{Balance, EndpointConfig, OutlierConfig, Strategy};
use switchyard_core::{RejectionKind, find_rejection};
use tower::ServiceExt;

use support::{
    Req, backend, call, occupy, ok, one_at_a_time, prefer, preferring, settle, shares, stuck,
};

#[tokio::test(start_paused = true)]
async fn a_not_ready_endpoint_is_not_picked_until_it_is_ready_again() {
    let (open_tx, open) = tokio::sync::watch::channel(false);
    let (busy, _, _) = one_at_a_time("busy", open);
    let balance: Balance<Req, String> = preferring();
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    balance
        .add("idle", ok("idle"), &EndpointConfig::default())
        .unwrap();
    settle().await;
    assert_eq!(balance.eligible(), ["busy", "idle"], "both ready at first");

    // The first call takes busy's only slot; the second, sent there too, finds it not ready.
    let first = tokio::spawn(balance.clone().oneshot(prefer("busy")));
    settle().await;
    let second = tokio::spawn(balance.clone().oneshot(prefer("busy")));
    settle().await;
    assert_eq!(
        balance.eligible(),
        ["idle"],
        "a not-ready endpoint leaves the pick"
    );
    assert!(!balance.stats()[0].ready);
    // Round robin would alternate; every call now goes to the ready endpoint, even one that
    // prefers the busy one.
    for _ in 0..6 {
        assert_eq!(call(&balance, None).await.unwrap(), "idle");
    }
    assert_eq!(
        balance.clone().oneshot(prefer("busy")).await.unwrap(),
        "idle"
    );

    // Once its calls finish, the background task sees it ready, with no call arriving.
    open_tx.send(true).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "busy");
    assert_eq!(
        second.await.unwrap().unwrap(),
        "busy",
        "the waiting call was served"
    );
    settle().await;
    assert_eq!(balance.eligible(), ["busy", "idle"]);
    assert!(balance.stats()[0].ready);
    let shares = shares(&balance, 10).await;
    assert_eq!(shares["busy"], 5, "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_waits_while_no_endpoint_is_ready_and_is_woken_without_polling() {
    let (open_tx, open) = tokio::sync::watch::channel(false);
    let (busy, polls, _) = one_at_a_time("busy", open);
    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    settle().await;

    let first = tokio::spawn(balance.clone().oneshot((None, 1)));
    settle().await;
    // Not known yet to be busy: the next call is taken, and waits on the endpoint.
    let second = tokio::spawn(balance.clone().oneshot((None, 2)));
    settle().await;
    assert_eq!(
        balance.eligible(),
        ["busy"],
        "the waiting endpoint is still the one to call"
    );

    let ready = Arc::new(AtomicBool::new(false));
    let waiter = tokio::spawn({
        let (mut balance, ready) = (balance.clone(), Arc::clone(&ready));
        async move {
            balance.ready().await.unwrap();
            ready.store(true, Ordering::SeqCst);
        }
    });
    settle().await;
    let polled = polls.load(Ordering::SeqCst);
    // An hour passes with no wake: nothing polls the endpoint meanwhile (no busy loop).
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!ready.load(Ordering::SeqCst), "no endpoint is ready");
    assert_eq!(
        polls.load(Ordering::SeqCst),
        polled,
        "polled while nothing changed"
    );

    open_tx.send(true).unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    settle().await;
    waiter.await.unwrap();
    assert!(ready.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn removing_a_not_ready_endpoint_stops_driving_it() {
    // A call from outside the balancer holds the only slot, for good.
    let (busy, token, _stuck) = stuck().await;

    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    settle().await;
    assert!(!balance.stats()[0].ready);
    assert!(Arc::strong_count(&token) > 1);

    balance.remove("busy").unwrap();
    settle().await;
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "a task still drives the removed endpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_not_ready_when_added_is_not_picked() {
    // Its only slot is taken before it joins the balancer.
    let (busy, _, _stuck) = stuck().await;
    settle().await;

    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    balance
        .add("idle", ok("idle"), &EndpointConfig::default())
        .unwrap();
    settle().await;
    assert_eq!(balance.eligible(), ["idle"]);
    for _ in 0..4 {
        assert_eq!(call(&balance, None).await.unwrap(), "idle");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_on_an_endpoint_that_is_removed_picks_again() {
    // A call from outside holds busy's only slot, for good.
    let (busy, _, _stuck) = stuck().await;

    let balance: Balance<Req, String> = preferring();
    // It is the only endpoint: the call waits on it, not ready as it is.
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    let waiting = tokio::spawn(balance.clone().oneshot(prefer("busy")));
    settle().await;
    assert!(
        !waiting.is_finished(),
        "the call waits on the busy endpoint"
    );

    balance
        .add("idle", ok("idle"), &EndpointConfig::default())
        .unwrap();
    balance.remove("busy").unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "idle", "it picked again");
    let stats = balance.stats();
    assert_eq!((stats[0].name.as_str(), stats[0].in_flight), ("idle", 0));
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_on_a_removed_endpoint_with_nothing_left_fails_with_a_503() {
    let (busy, _, _stuck) = stuck().await;
    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    let waiting = tokio::spawn(balance.clone().oneshot((None, 1)));
    settle().await;
    balance.remove("busy").unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::NoAvailableEndpoint)
    );
}

#[test]
fn an_endpoint_is_not_left_out_when_its_readiness_task_dies_with_its_runtime() {
    let (_open_tx, open) = tokio::sync::watch::channel(false);
    let (busy, _, _) = one_at_a_time("busy", open);
    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    let startup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    startup.block_on(async {
        let _stuck = occupy(&busy).await;
        balance
            .add("busy", busy, &EndpointConfig::default())
            .unwrap();
        settle().await;
        assert!(!balance.stats()[0].ready);
    });
    // The runtime that ran the readiness task is gone: the endpoint is not left out forever.
    drop(startup);
    assert!(balance.stats()[0].ready);
    assert_eq!(balance.eligible(), ["busy"]);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_also_wakes_when_an_ejected_endpoint_returns() {
    let (_open_tx, open) = tokio::sync::watch::channel(false);
    let (busy, _, _) = one_at_a_time("busy", open);
    let balance = preferring()
        .with_outlier(OutlierConfig {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        })
        .unwrap();
    balance
        .add(
            "flaky",
            backend("flaky", Duration::ZERO, Arc::new(AtomicBool::new(true))),
            &EndpointConfig::default(),
        )
        .unwrap();
    balance
        .add("busy", busy, &EndpointConfig::default())
        .unwrap();
    settle().await;
    // flaky fails once and is ejected for 30 s; then busy's only slot is taken and a second
    // call finds it not ready.
    balance.clone().oneshot(prefer("flaky")).await.unwrap_err();
    assert_eq!(balance.eligible(), ["busy"]);
    let _first = tokio::spawn(balance.clone().oneshot(prefer("busy")));
    settle().await;
    let _second = tokio::spawn(balance.clone().oneshot(prefer("busy")));
    settle().await;

    let waiter = tokio::spawn({
        let mut balance = balance.clone();
        async move { balance.ready().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(!waiter.is_finished(), "nothing is ready yet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(waiter.is_finished(), "flaky's return ended the wait");
    waiter.await.unwrap().unwrap();
}
