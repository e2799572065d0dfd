//! Each strategy's distribution, and what a call's hint changes about the pick.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use switchyard_balance::{Balance, EndpointConfig, Health, Hint, Strategy};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt, service_fn};

use support::{Backend, Req, backend, balance, call, ok, shares};

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
