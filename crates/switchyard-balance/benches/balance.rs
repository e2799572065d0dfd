//! What a pick costs, per strategy, at 10 and 100 endpoints, against calling one endpoint
//! directly and against tower's `p2c::Balance` (over `PendingRequests` load); and a simulated
//! heterogeneous-latency run (paused tokio time, so latencies are exact) reporting p50/p99 for
//! round-robin against least-latency.
//!
//! Every endpoint is the same boxed `service_fn` answering at once; each call is `ready` then
//! `call` on a current-thread runtime, so the figures are one whole call through the balancer.
//! One more row runs `round-robin` with outlier detection on: every call then records its
//! outcome in its endpoint's outlier state (one uncontended lock), next to the row without.
//!
//! `cargo bench -p switchyard-balance --bench balance`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use switchyard_core::test_util::drive;

use switchyard_balance::{
    Balance, EndpointConfig, EndpointView, Hint, OutlierConfig, PickContext, Rng, Strategy,
};
use tower::balance::p2c;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt, service_fn};

type Backend = BoxCloneSyncService<u64, u64, BoxError>;

fn backend() -> Backend {
    BoxCloneSyncService::new(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }))
}

const STRATEGIES: [Strategy; 7] = [
    Strategy::RoundRobin,
    Strategy::Random,
    Strategy::LeastConnections,
    Strategy::LeastLatency,
    Strategy::WeightedRandom,
    Strategy::ConsistentHash,
    Strategy::Priority,
];

fn balancer(strategy: Strategy, n: usize) -> Balance<u64, u64> {
    balancer_with(strategy, n, None)
}

fn balancer_with(
    strategy: Strategy,
    n: usize,
    outlier: Option<OutlierConfig>,
) -> Balance<u64, u64> {
    let mut balance = Balance::new("bench", strategy).with_seed(1);
    if let Some(outlier) = outlier {
        balance = balance
            .with_outlier(outlier)
            .expect("a valid outlier config");
    }
    if strategy == Strategy::ConsistentHash {
        // Only this strategy reads the key; the others pay nothing for hints.
        balance = balance.with_hint(|n: &u64| Some(Hint::key(n.to_string())));
    }
    for i in 0..n {
        let config = EndpointConfig::default()
            .with_weight(1 + (i % 4) as u32)
            .with_priority((i % 3) as i32);
        balance
            .add(format!("ep-{i}"), backend(), &config)
            .expect("add");
    }
    balance
}

/// The pick alone: a strategy's `Pick` over a detached eligible set, no call around it.
fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/pick-only");
    let rng = Rng::seeded(1);
    let hint = Hint::key("user-42");
    for n in [10, 100] {
        let views: Vec<Arc<EndpointView>> = (0..n)
            .map(|i: i32| {
                let config = EndpointConfig::default()
                    .with_weight(1 + i.unsigned_abs() % 4)
                    .with_priority(i % 3);
                Arc::new(EndpointView::new(format!("ep-{i}"), &config))
            })
            .collect();
        for strategy in STRATEGIES {
            let pick = strategy.selector().build(&views);
            let hint = (strategy == Strategy::ConsistentHash).then_some(&hint);
            let cx = PickContext::new(hint, &rng, 1_000_000);
            let name = serde_json::to_value(strategy).expect("name");
            group.bench_function(
                format!("{} ({n})", name.as_str().unwrap_or_default()),
                |b| b.iter(|| black_box(pick.pick(black_box(&views), &cx))),
            );
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    simulate();
    picks(c);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("balance/pick");
    macro_rules! bench_service {
        ($name:expr, $make:expr) => {
            group.bench_function($name, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let mut svc = $make;
                    async move {
                        let start = std::time::Instant::now();
                        drive(&mut svc, iters).await;
                        start.elapsed()
                    }
                });
            });
        };
    }
    bench_service!("direct (one boxed endpoint)", backend());
    for n in [10, 100] {
        bench_service!(
            format!("tower p2c PendingRequests ({n})"),
            p2c::Balance::new(ServiceList::new(
                (0..n).map(|_| PendingRequests::new(backend(), CompleteOnResponse::default())),
            ))
        );
        for strategy in STRATEGIES {
            let name = serde_json::to_value(strategy).expect("name");
            bench_service!(
                format!("switchyard {} ({n})", name.as_str().unwrap_or_default()),
                balancer(strategy, n)
            );
        }
        bench_service!(
            format!("switchyard round-robin + outlier detection ({n})"),
            balancer_with(Strategy::RoundRobin, n, Some(OutlierConfig::default()))
        );
    }
    group.finish();
}

/// Ten endpoints with different latencies, 32 callers, 5,000 calls, on paused time: each
/// call's latency is exactly its endpoint's delay plus any queueing, so the percentiles are
/// the strategy's doing.
fn simulate() {
    const DELAYS_MS: [u64; 10] = [5, 5, 5, 5, 10, 10, 20, 40, 80, 200];
    for strategy in [Strategy::RoundRobin, Strategy::LeastLatency] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let mut latencies = rt.block_on(async {
            let balance: Balance<u64, u64> = Balance::new("sim", strategy).with_seed(9);
            for (i, delay) in DELAYS_MS.iter().enumerate() {
                let delay = Duration::from_millis(*delay);
                let svc: Backend = BoxCloneSyncService::new(service_fn(move |n: u64| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, BoxError>(n)
                }));
                balance
                    .add(format!("ep-{i}"), svc, &EndpointConfig::default())
                    .expect("add");
            }
            let mut calls = tokio::task::JoinSet::new();
            let mut started = 0u64;
            let mut latencies = Vec::with_capacity(5000);
            let timed = |balance: Balance<u64, u64>, n: u64| async move {
                let at = tokio::time::Instant::now();
                balance.oneshot(n).await.expect("call");
                at.elapsed()
            };
            while started < 32 {
                calls.spawn(timed(balance.clone(), started));
                started += 1;
            }
            while let Some(done) = calls.join_next().await {
                latencies.push(done.expect("task"));
                if started < 5000 {
                    calls.spawn(timed(balance.clone(), started));
                    started += 1;
                }
            }
            latencies
        });
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        eprintln!(
            "balance/simulation {strategy:?}: p50 {:?}, p99 {:?}",
            at(0.50),
            at(0.99)
        );
    }
}

criterion_group! {
    name = balance;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(balance);
