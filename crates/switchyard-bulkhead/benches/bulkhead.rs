//! The uncontended cost of a bulkhead slot, against a bare service, tower's
//! `ConcurrencyLimit` and tower-resilience's bulkhead, in one run.
//!
//! Every contender wraps the same `service_fn` with 64 slots (never all taken: the service
//! answers at once) and is driven the same way, `ready().await` then `call(i).await`, on a
//! current-thread runtime (`single`) and from two tasks on a two-worker runtime, each with its
//! own clone (`contended`, wall time per call).
//!
//! `cargo bench -p switchyard-bulkhead --bench bulkhead`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::convert::Infallible;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_bulkhead::{BulkheadConfig, BulkheadLayer, BulkheadPolicy};
use switchyard_core::test_util::drive;
use tokio::runtime::Runtime;
use tower::{Layer, Service, service_fn};

const SLOTS: u32 = 64;

type Bare = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;

fn bare() -> Bare {
    service_fn(|req: u64| std::future::ready(Ok::<u64, Infallible>(req)))
}

fn switchyard(policy: BulkheadPolicy) -> switchyard_bulkhead::Bulkhead<Bare> {
    BulkheadLayer::new("bench", &BulkheadConfig::new(SLOTS, policy))
        .expect("valid config")
        .layer(bare())
}

fn queue() -> BulkheadPolicy {
    BulkheadPolicy::Queue {
        capacity: 1024,
        max_wait: Duration::from_secs(1),
    }
}

fn concurrency_limit() -> tower::limit::ConcurrencyLimit<Bare> {
    tower::limit::ConcurrencyLimitLayer::new(SLOTS as usize).layer(bare())
}

fn tower_resilience()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(SLOTS as usize)
        .build()
        .expect("valid config")
        .layer(bare())
}

/// Drives `iters` calls through `svc`.
fn single(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("bulkhead/single");
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
    bench_service!("bare", bare());
    bench_service!(
        "switchyard/hard_reject",
        switchyard(BulkheadPolicy::HardReject)
    );
    bench_service!("switchyard/queue", switchyard(queue()));
    bench_service!(
        "switchyard/soft_allow",
        switchyard(BulkheadPolicy::SoftAllow)
    );
    bench_service!("tower/concurrency_limit", concurrency_limit());
    bench_service!("tower-resilience/bulkhead", tower_resilience());
    group.finish();
}

fn contended(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("bulkhead/contended");
    macro_rules! bench_service {
        ($name:expr, $make:expr) => {
            group.bench_function($name, |b| {
                let svc = $make;
                b.to_async(&rt).iter_custom(|iters| {
                    let (mut x, mut y) = (svc.clone(), svc.clone());
                    async move {
                        let per_task = iters.div_ceil(2);
                        let start = std::time::Instant::now();
                        let t1 = tokio::spawn(async move { drive(&mut x, per_task).await });
                        let t2 = tokio::spawn(async move { drive(&mut y, per_task).await });
                        t1.await.expect("task");
                        t2.await.expect("task");
                        start.elapsed()
                    }
                });
            });
        };
    }
    bench_service!("bare", bare());
    bench_service!(
        "switchyard/hard_reject",
        switchyard(BulkheadPolicy::HardReject)
    );
    bench_service!("switchyard/queue", switchyard(queue()));
    bench_service!(
        "switchyard/soft_allow",
        switchyard(BulkheadPolicy::SoftAllow)
    );
    bench_service!("tower/concurrency_limit", concurrency_limit());
    bench_service!("tower-resilience/bulkhead", tower_resilience());
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = single, contended
}
criterion_main!(benches);
