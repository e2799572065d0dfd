//! The cost of a rate-limit decision, against governor used bare and tower's `RateLimit`, in
//! one run.
//!
//! The quota is far above the call rate, so every call is admitted: this is the decision's cost
//! alone. Keyed contenders spread calls over 1,000 keys. Services are driven by `ready().await`
//! then `call(i).await` on a current-thread runtime.
//!
//! `cargo bench -p switchyard-ratelimit --bench ratelimit`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use switchyard_ratelimit::{KeyedRateLimitLayer, RateLimitConfig, RateLimitLayer, TokioClock};
use tower::{Layer, Service, ServiceExt, service_fn};

const KEYS: u64 = 1000;

type Bare = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;

fn bare() -> Bare {
    service_fn(|req: u64| std::future::ready(Ok::<u64, Infallible>(req)))
}

fn config() -> RateLimitConfig {
    RateLimitConfig::new("1000000/1ms".parse().expect("rate")).with_burst(1_000_000)
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
        .allow_burst(NonZeroU32::new(1_000_000).expect("non-zero"))
}

async fn drive<S>(svc: &mut S, iters: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        let out = svc
            .ready()
            .await
            .expect("ready")
            .call(black_box(i))
            .await
            .expect("call");
        black_box(out);
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("ratelimit/keyed");
    let governor_quanta = RateLimiter::dashmap(quota());
    group.bench_function("governor/check_key (quanta clock)", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(governor_quanta.check_key(&(i % KEYS)).is_ok())
        });
    });
    let governor_tokio = RateLimiter::dashmap_with_clock(quota(), TokioClock);
    group.bench_function("governor/check_key (tokio clock)", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(governor_tokio.check_key(&(i % KEYS)).is_ok())
        });
    });
    group.bench_function("switchyard/keyed service", |b| {
        let layer =
            KeyedRateLimitLayer::new("bench", &config(), |n: &u64| n % KEYS).expect("config");
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = layer.layer(bare());
            async move {
                let start = std::time::Instant::now();
                drive(&mut svc, iters).await;
                start.elapsed()
            }
        });
    });
    group.finish();

    let mut group = c.benchmark_group("ratelimit/global");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut svc = bare();
            let start = std::time::Instant::now();
            drive(&mut svc, iters).await;
            start.elapsed()
        });
    });
    let governor_direct = RateLimiter::direct(quota());
    group.bench_function("governor/check (quanta clock)", |b| {
        b.iter(|| black_box(governor_direct.check().is_ok()));
    });
    group.bench_function("switchyard/service", |b| {
        let layer = RateLimitLayer::new("bench", &config()).expect("config");
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = layer.layer(bare());
            async move {
                let start = std::time::Instant::now();
                drive(&mut svc, iters).await;
                start.elapsed()
            }
        });
    });
    group.bench_function("tower/rate_limit", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            // tower's limiter is not Clone: one per sample, with a quota it never reaches.
            let mut svc =
                tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(bare());
            let start = std::time::Instant::now();
            drive(&mut svc, iters).await;
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group! {
    name = ratelimit;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(ratelimit);
