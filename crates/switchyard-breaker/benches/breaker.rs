//! The closed-path cost of a circuit breaker, against a bare service and the peer crates, in
//! one run.
//!
//! Every contender wraps the same `service_fn` and is driven the same way: `ready().await`
//! then `call(i).await`, in a loop, on a current-thread runtime (`single`), and from two tasks
//! on a two-worker runtime, each task with its own clone (`contended`, reported per call).
//!
//! `cargo bench -p switchyard-breaker --bench breaker`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, FailureWindow, Trip};
use switchyard_core::test_util::drive;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

type Bare = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;

fn bare() -> Bare {
    service_fn(|req: u64| std::future::ready(Ok::<u64, Infallible>(req)))
}

fn switchyard(trip: Trip) -> switchyard_breaker::CircuitBreaker<Bare> {
    let config = CircuitBreakerConfig::new(trip).with_wait_in_open(Duration::from_secs(30));
    CircuitBreakerLayer::new("bench", config)
        .expect("valid config")
        .layer(bare())
}

fn count_window() -> Trip {
    Trip::count_window(100, 50.0).into()
}

fn time_window() -> Trip {
    Trip::FailureRate(switchyard_breaker::RateConfig::new(
        FailureWindow::Time {
            duration: Duration::from_secs(60),
            buckets: 10,
        },
        50.0,
    ))
}

fn tower_resilience()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .wait_duration_in_open(Duration::from_secs(30))
        .build()
        .expect("valid config")
        .layer(bare())
}

fn failsafe_breaker() -> impl failsafe::futures::CircuitBreaker + Clone + Send + Sync + 'static {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(30)),
        ))
        .build()
}

/// Drives `iters` calls through `svc`.
async fn drive_failsafe<F: failsafe::futures::CircuitBreaker>(breaker: &F, iters: u64) {
    let mut svc = bare();
    for i in 0..iters {
        let call = svc.ready().await.expect("ready").call(black_box(i));
        black_box(breaker.call(call).await.expect("call"));
    }
}

fn single(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("closed_path/single");

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
        "switchyard/consecutive",
        switchyard(Trip::consecutive_failures(5))
    );
    bench_service!("switchyard/count_window", switchyard(count_window()));
    bench_service!("switchyard/time_window", switchyard(time_window()));
    bench_service!("tower-resilience/consecutive", tower_resilience());
    group.bench_function("failsafe/consecutive", |b| {
        let breaker = failsafe_breaker();
        b.to_async(&rt).iter_custom(|iters| {
            let breaker = breaker.clone();
            async move {
                let start = std::time::Instant::now();
                drive_failsafe(&breaker, iters).await;
                start.elapsed()
            }
        });
    });
    group.finish();
}

/// What one clock read costs here: the floor under the time window, which reads the clock once
/// per call. (Benches build tokio with the `test-util` feature, unified in from the
/// dev-dependencies, which makes `tokio::time::Instant::now` check for a paused clock first.)
fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group.bench_function("tokio::time::Instant::now", |b| {
        b.iter(tokio::time::Instant::now);
    });
    group.bench_function("std::time::Instant::now", |b| {
        b.iter(std::time::Instant::now);
    });
    group.finish();
}

/// Two tasks, each with its own clone of one shared breaker, on two worker threads; the
/// figure is wall time per call (both tasks' calls counted).
fn contended(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("closed_path/contended");

    macro_rules! bench_service {
        ($name:expr, $make:expr) => {
            group.bench_function($name, |b| {
                let svc = $make;
                b.to_async(&rt).iter_custom(|iters| {
                    let (mut a, mut b) = (svc.clone(), svc.clone());
                    async move {
                        let per_task = iters.div_ceil(2);
                        let start = std::time::Instant::now();
                        let t1 = tokio::spawn(async move { drive(&mut a, per_task).await });
                        let t2 = tokio::spawn(async move { drive(&mut b, per_task).await });
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
        "switchyard/consecutive",
        switchyard(Trip::consecutive_failures(5))
    );
    bench_service!("switchyard/count_window", switchyard(count_window()));
    bench_service!("switchyard/time_window", switchyard(time_window()));
    bench_service!("tower-resilience/consecutive", tower_resilience());
    group.bench_function("failsafe/consecutive", |b| {
        let breaker = failsafe_breaker();
        b.to_async(&rt).iter_custom(|iters| {
            let (x, y) = (breaker.clone(), breaker.clone());
            async move {
                let per_task = iters.div_ceil(2);
                let start = std::time::Instant::now();
                let t1 = tokio::spawn(async move { drive_failsafe(&x, per_task).await });
                let t2 = tokio::spawn(async move { drive_failsafe(&y, per_task).await });
                t1.await.expect("task");
                t2.await.expect("task");
                start.elapsed()
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = single, contended, clock
}
criterion_main!(benches);
