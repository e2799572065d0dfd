//! The balancer: each strategy's distribution, runtime changes, health, ejection, the cap.
//! Every timing behaviour runs on paused tokio time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use switchyard_balance::{
    Balance, EndpointConfig, EndpointError, Health, HealthCheckConfig, Hint, NoAvailableEndpoint,
    OutlierConfig, Strategy,
};
use switchyard_core::{RejectionKind, find_cause, find_rejection};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt, service_fn};

/// The request: a key to route on (for consistent hashing) and a payload.
type Req = (Option<String>, u32);
type Backend = BoxCloneSyncService<Req, String, BoxError>;

/// An endpoint answering its own name after `delay`, failing while `failing` is set.
fn backend(name: &'static str, delay: Duration, failing: Arc<AtomicBool>) -> Backend {
    BoxCloneSyncService::new(service_fn(move |_req: Req| {
        let failing = failing.load(Ordering::SeqCst);
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if failing {
                Err::<String, BoxError>(format!("{name} is down").into())
            } else {
                Ok(name.to_owned())
            }
        }
    }))
}

fn ok(name: &'static str) -> Backend {
    backend(name, Duration::ZERO, Arc::default())
}

fn balance(strategy: Strategy, names: &[&'static str]) -> Balance<Req, String> {
    let balance = Balance::new("test", strategy)
        .with_seed(7)
        .with_hint(|req: &Req| req.0.clone().map(Hint::key));
    for name in names {
        balance
            .add(*name, ok(name), &EndpointConfig::default())
            .unwrap();
    }
    balance
}

async fn call(balance: &Balance<Req, String>, key: Option<&str>) -> Result<String, BoxError> {
    balance.clone().oneshot((key.map(str::to_owned), 0)).await
}

async fn shares(balance: &Balance<Req, String>, calls: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts
            .entry(call(balance, None).await.unwrap())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_takes_turns() {
    let balance = balance(Strategy::RoundRobin, &["a", "b", "c"]);
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(call(&balance, None).await.unwrap());
    }
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test]
async fn random_and_weighted_random_follow_their_distributions() {
    let n = 30_000;
    let counts = shares(&balance(Strategy::Random, &["a", "b", "c"]), n).await;
    for name in ["a", "b", "c"] {
        let share = counts[name] as f64 / n as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.02, "{name}: {share}");
    }

    let weighted = Balance::new("test", Strategy::WeightedRandom).with_seed(11);
    for (name, weight) in [("a", 1), ("b", 2), ("c", 7)] {
        weighted
            .add(
                name,
                ok(name),
                &EndpointConfig::default().with_weight(weight),
            )
            .unwrap();
    }
    let counts = shares(&weighted, n).await;
    for (name, expected) in [("a", 0.1), ("b", 0.2), ("c", 0.7)] {
        let share = counts[name] as f64 / n as f64;
        assert!((share - expected).abs() < 0.02, "{name}: {share}");
    }
}

#[tokio::test(start_paused = true)]
async fn least_connections_avoids_the_busy_endpoint() {
    let balance = Balance::new("test", Strategy::LeastConnections).with_seed(3);
    balance
        .add(
            "slow",
            backend("slow", Duration::from_secs(60), Arc::default()),
            &EndpointConfig::default(),
        )
        .unwrap();
    balance
        .add("fast", ok("fast"), &EndpointConfig::default())
        .unwrap();
    // Pin five calls on `slow` while it is the only eligible endpoint.
    balance.disable("fast").unwrap();
    let mut pending = Vec::new();
    for _ in 0..5 {
        pending.push(tokio::spawn(balance.clone().oneshot((None, 0))));
    }
    tokio::task::yield_now().await;
    assert_eq!(balance.stats()[0].in_flight, 5);
    balance.enable("fast").unwrap();
    // With two endpoints the two choices are both of them: the idle one wins every time.
    for _ in 0..50 {
        assert_eq!(call(&balance, None).await.unwrap(), "fast");
    }
    for p in pending {
        p.abort();
        let _ = p.await;
    }
    // Cancelled calls release their slot.
    assert_eq!(balance.stats()[0].in_flight, 0);
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_endpoint() {
    let balance = balance(Strategy::ConsistentHash, &["a", "b", "c", "d"]);
    for key in ["user-1", "user-2", "user-3", "session-xyz"] {
        let first = call(&balance, Some(key)).await.unwrap();
        for _ in 0..10 {
            assert_eq!(call(&balance, Some(key)).await.unwrap(), first, "{key}");
        }
    }
    // Keys spread over every endpoint.
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        seen.insert(call(&balance, Some(&format!("k{i}"))).await.unwrap());
    }
    assert_eq!(seen.len(), 4);
}

/// Which endpoint each key goes to, on a live balancer.
fn owners(
    rt: &tokio::runtime::Runtime,
    balance: &Balance<Req, String>,
    keys: &[String],
) -> Vec<String> {
    rt.block_on(async {
        let mut out = Vec::new();
        for key in keys {
            out.push(call(balance, Some(key)).await.unwrap());
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Adding one endpoint to N moves about 1/(N+1) of the keys, all of them to the new one;
    /// removing it moves them back and nothing else.
    #[test]
    fn consistent_hash_moves_about_one_nth_of_the_keys(n in 3usize..16, seed in 0u64..1000) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let balance: Balance<Req, String> = Balance::new("prop", Strategy::ConsistentHash)
            .with_hint(|req: &Req| req.0.clone().map(Hint::key));
        for i in 0..n {
            let name: &'static str = format!("ep-{seed}-{i}").leak();
            balance.add(name, ok(name), &EndpointConfig::default()).unwrap();
        }
        let keys: Vec<String> = (0..3000).map(|i| format!("key-{seed}-{i}")).collect();
        let before = owners(&rt, &balance, &keys);
        let new: &'static str = format!("ep-{seed}-new").leak();
        balance.add(new, ok(new), &EndpointConfig::default()).unwrap();
        let after = owners(&rt, &balance, &keys);
        let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
        for &i in &moved {
            prop_assert_eq!(after[i].as_str(), new);
        }
        let fraction = moved.len() as f64 / keys.len() as f64;
        let ideal = 1.0 / (n + 1) as f64;
        prop_assert!(fraction > ideal * 0.5 && fraction < ideal * 1.6, "moved {} (ideal {})", fraction, ideal);
        // Removing it again sends exactly those keys back.
        balance.remove(new).unwrap();
        prop_assert_eq!(owners(&rt, &balance, &keys), before);
    }
}

#[tokio::test]
async fn priority_fails_over_to_the_next_tier_and_back() {
    let balance = Balance::new("test", Strategy::Priority);
    for (name, priority) in [("a", 10), ("b", 10), ("c", 5)] {
        balance
            .add(
                name,
                ok(name),
                &EndpointConfig::default().with_priority(priority),
            )
            .unwrap();
    }
    let seen: Vec<_> = [
        call(&balance, None).await.unwrap(),
        call(&balance, None).await.unwrap(),
    ]
    .into();
    assert_eq!(seen, ["a", "b"]);
    balance.set_health("a", Health::Unhealthy).unwrap();
    assert_eq!(call(&balance, None).await.unwrap(), "b");
    balance.set_health("b", Health::Offline).unwrap();
    assert_eq!(call(&balance, None).await.unwrap(), "c");
    // Degraded still serves: back to the top tier.
    balance.set_health("a", Health::Degraded).unwrap();
    assert_eq!(call(&balance, None).await.unwrap(), "a");
    assert_eq!(call(&balance, None).await.unwrap(), "a");
}

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

#[tokio::test]
async fn preferred_endpoints_win_when_eligible() {
    let balance = Balance::new("test", Strategy::RoundRobin).with_hint(|req: &Req| {
        req.0.clone().map(|name| Hint {
            key: None,
            preferred: vec!["nobody".into(), name],
        })
    });
    for name in ["a", "b", "c"] {
        balance
            .add(name, ok(name), &EndpointConfig::default())
            .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(call(&balance, Some("c")).await.unwrap(), "c");
    }
    balance.disable("c").unwrap();
    assert_ne!(call(&balance, Some("c")).await.unwrap(), "c");
}

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
    let balance = Balance::new("test", Strategy::RoundRobin).with_outlier(outlier);
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
    let balance = Balance::new("test", Strategy::RoundRobin).with_outlier(outlier);
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

#[tokio::test(start_paused = true)]
async fn least_latency_starves_the_slow_endpoint() {
    // Ten endpoints, one ten times slower; forty concurrent clients.
    let balance = Balance::new("test", Strategy::LeastLatency).with_seed(5);
    for i in 0..10 {
        let name: &'static str = format!("ep{i}").leak();
        let delay = Duration::from_millis(if i == 0 { 100 } else { 10 });
        balance
            .add(
                name,
                backend(name, delay, Arc::default()),
                &EndpointConfig::default(),
            )
            .unwrap();
    }
    // Forty calls in flight at all times, 4,000 in all.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..40 {
        calls.spawn(balance.clone().oneshot((None, 0)));
    }
    let mut spawned = 40;
    while let Some(done) = calls.join_next().await {
        done.unwrap().unwrap();
        if spawned < 4000 {
            calls.spawn(balance.clone().oneshot((None, 0)));
            spawned += 1;
        }
    }
    let stats = balance.stats();
    let total: u64 = stats.iter().map(|s| s.total_requests).sum();
    let slow = stats[0].total_requests as f64 / total as f64;
    assert_eq!(total, 4000);
    // Round robin would give it 10%.
    assert!(
        slow < 0.05,
        "the slow endpoint took {:.1}% of the calls",
        slow * 100.0
    );
    assert!(stats[0].latency.unwrap() > stats[1].latency.unwrap());
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

#[tokio::test]
async fn the_balancer_is_a_service() {
    let mut balance = balance(Strategy::RoundRobin, &["a"]);
    balance.ready().await.unwrap();
    assert_eq!(balance.call((None, 1)).await.unwrap(), "a");
}

/// An endpoint that can take one call at a time (`ConcurrencyLimit` 1, so `poll_ready` waits
/// while a call runs), whose calls wait until `open` is set, counting its `poll_ready` polls.
/// Its clones share `token`, so a test sees when the balancer drops them all.
#[derive(Clone)]
struct OneAtATime {
    inner: tower::limit::ConcurrencyLimit<Backend>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
    _token: Arc<()>,
}

impl Service<Req> for OneAtATime {
    type Response = String;
    type Error = BoxError;
    type Future = <tower::limit::ConcurrencyLimit<Backend> as Service<Req>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}

fn one_at_a_time(
    name: &'static str,
    open: tokio::sync::watch::Receiver<bool>,
) -> (OneAtATime, Arc<std::sync::atomic::AtomicUsize>, Arc<()>) {
    let backend = BoxCloneSyncService::new(service_fn(move |_req: Req| {
        let mut open = open.clone();
        async move {
            open.wait_for(|open| *open).await.map_err(BoxError::from)?;
            Ok::<_, BoxError>(name.to_owned())
        }
    }));
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let token = Arc::new(());
    let service = OneAtATime {
        inner: tower::limit::ConcurrencyLimit::new(backend, 1),
        polls: Arc::clone(&polls),
        _token: Arc::clone(&token),
    };
    (service, polls, token)
}

/// Takes `busy`'s only slot with a call from outside the balancer, held until the gate opens.
async fn occupy(busy: &OneAtATime) -> tokio::task::JoinHandle<Result<String, BoxError>> {
    let mut occupant = busy.clone();
    occupant.ready().await.unwrap();
    tokio::spawn(occupant.call((None, 0)))
}

/// Keeps an endpoint's only slot taken: the gate it waits on, and the call holding the slot.
struct Stuck {
    _gate: tokio::sync::watch::Sender<bool>,
    _occupant: tokio::task::JoinHandle<Result<String, BoxError>>,
}

/// A one-slot endpoint whose slot a call from outside the balancer holds for good, with the
/// token its clones share.
async fn stuck() -> (OneAtATime, Arc<()>, Stuck) {
    let (gate, open) = tokio::sync::watch::channel(false);
    let (busy, _, token) = one_at_a_time("busy", open);
    let occupant = occupy(&busy).await;
    (
        busy,
        token,
        Stuck {
            _gate: gate,
            _occupant: occupant,
        },
    )
}

/// A round-robin balancer whose calls name their preferred endpoint (the request's key).
fn preferring() -> Balance<Req, String> {
    Balance::new("test", Strategy::RoundRobin).with_hint(|req: &Req| {
        req.0.clone().map(|name| Hint {
            key: None,
            preferred: vec![name],
        })
    })
}

fn prefer(name: &str) -> Req {
    (Some(name.to_owned()), 0)
}

/// Lets spawned tasks run (paused time: the clock does not move while they have work).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

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

fn check_service(
    up: Arc<AtomicBool>,
    delay: Duration,
) -> impl Service<(), Response = Health, Error = BoxError, Future: Send> + Send + 'static {
    service_fn(move |()| {
        let up = up.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            if up {
                Ok::<_, BoxError>(Health::Healthy)
            } else {
                Err("health endpoint says down".into())
            }
        }
    })
}

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

#[tokio::test]
async fn endpoints_follow_a_discover_stream() {
    use tower::discover::Change;
    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    let changes = futures::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(Change::Insert("a", ok("a"))),
        Ok(Change::Insert("b", ok("b"))),
        Ok(Change::Insert("c", ok("c"))),
        Ok(Change::Remove("a")),
        // A known key again: a new service, the same endpoint (its health stays).
        Ok(Change::Insert("b", ok("b2"))),
    ]);
    let discovery = balance.follow(changes, EndpointConfig::default());
    for _ in 0..100 {
        if !discovery.is_running() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!discovery.is_running(), "the stream was consumed");
    assert_eq!(balance.eligible(), ["b", "c"]);
    assert_eq!(call(&balance, None).await.unwrap(), "b2");
    assert_eq!(call(&balance, None).await.unwrap(), "c");
}

#[tokio::test]
async fn hints_can_travel_as_http_request_extensions() {
    type HttpBackend = BoxCloneSyncService<http::Request<()>, String, BoxError>;
    let named = |name: &'static str| -> HttpBackend {
        BoxCloneSyncService::new(service_fn(move |_: http::Request<()>| async move {
            Ok::<_, BoxError>(name.to_owned())
        }))
    };
    let balance = Balance::new("http", Strategy::RoundRobin).with_hint(Hint::from_extensions);
    for name in ["a", "b", "c"] {
        balance
            .add(name, named(name), &EndpointConfig::default())
            .unwrap();
    }
    for _ in 0..3 {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(Hint {
            key: None,
            preferred: vec!["b".into()],
        });
        assert_eq!(balance.clone().oneshot(req).await.unwrap(), "b");
    }
}

#[tokio::test]
async fn an_async_block_awaiting_the_balancer_is_send() {
    // Endpoints failing with `BoxError`: the case rust-lang/rust#110338 breaks for balancers
    // whose `Service` impl is bounded on the endpoint's error type.
    let balance = balance(Strategy::RoundRobin, &["a"]);
    let task = tokio::spawn(async move { call(&balance, None).await });
    assert_eq!(task.await.unwrap().unwrap(), "a");
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
    let balance = Balance::new("test", Strategy::RoundRobin).with_outlier(outlier);
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
async fn a_latency_spike_is_forgotten_and_the_endpoint_gets_calls_again() {
    let slow_once = Arc::new(AtomicBool::new(true));
    let spiky: Backend = {
        let slow_once = Arc::clone(&slow_once);
        BoxCloneSyncService::new(service_fn(move |_: Req| {
            let slow = slow_once.swap(false, Ordering::SeqCst);
            async move {
                let delay = if slow { 1000 } else { 1 };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, BoxError>("spiky".to_owned())
            }
        }))
    };
    let balance = Balance::new("test", Strategy::LeastLatency).with_seed(1);
    balance
        .add("spiky", spiky, &EndpointConfig::default())
        .unwrap();
    balance
        .add(
            "steady",
            backend("steady", Duration::from_millis(1), Arc::default()),
            &EndpointConfig::default(),
        )
        .unwrap();
    balance.disable("steady").unwrap();
    assert_eq!(call(&balance, None).await.unwrap(), "spiky"); // the 1 s spike
    balance.enable("steady").unwrap();
    // One call a second: at first `steady` takes them all; the spike decays (10 s time
    // constant) until `spiky` is tried again.
    let mut spiky_after = None;
    for second in 0..120 {
        if call(&balance, None).await.unwrap() == "spiky" {
            spiky_after = Some(second);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let second = spiky_after.expect("the spiky endpoint was never tried again");
    assert!(second > 5, "tried again too soon: {second} s");
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
    let balance = preferring().with_outlier(OutlierConfig {
        consecutive_failures: 1,
        base_ejection: Duration::from_secs(30),
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    });
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
