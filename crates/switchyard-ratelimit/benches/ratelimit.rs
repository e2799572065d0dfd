//! The cost of a rate-limit decision, against governor used bare, tower's `RateLimit` and
//! tower_governor, in one run.
//!
//! The quota is far above the call rate, so every call is admitted: this is the decision's cost
//! alone. Keyed contenders spread calls over 1,000 keys. Services are driven by `ready().await`
//! then `call(i).await` on a current-thread runtime. `ratelimit/keyed-http` compares
//! switchyard's keyed layer with tower_governor's like-for-like: both take the key from the
//! same `x-tenant` header of an `http::Request<()>` (values built once, so every contender pays
//! the same to build a request) and wrap the same bare service answering an axum `Body`, which
//! tower_governor requires.
//!
//! `cargo bench -p switchyard-ratelimit --bench ratelimit`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use switchyard_core::test_util::drive;
use switchyard_ratelimit::{KeyedRateLimitLayer, RateLimitConfig, RateLimitLayer, TokioClock};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_governor::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

const KEYS: u64 = 1000;

const TENANT: &str = "x-tenant";

type Bare = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

fn bare() -> Bare {
    service_fn(|req: u64| ready(Ok::<u64, Infallible>(req)))
}

type BareHttp = tower::util::ServiceFn<
    fn(http::Request<()>) -> Ready<Result<http::Response<Body>, Infallible>>,
>;

fn bare_http() -> BareHttp {
    service_fn(|_req: http::Request<()>| {
        ready(Ok::<_, Infallible>(http::Response::new(Body::empty())))
    })
}

/// tower_governor's extractor doing what `switchyard_ratelimit::key::header` does: the header's
/// value as an owned `String`, `"-"` when absent.
#[derive(Clone, Copy)]
struct TenantHeader;

impl KeyExtractor for TenantHeader {
    type Key = String;

    fn extract<T>(&self, req: &http::Request<T>) -> Result<String, GovernorError> {
        Ok(req
            .headers()
            .get(TENANT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned())
    }
}

fn config() -> RateLimitConfig {
    RateLimitConfig::new("1000000/1ms".parse().expect("rate")).with_burst(1_000_000)
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
        .allow_burst(NonZeroU32::new(1_000_000).expect("non-zero"))
}

/// `drive` for HTTP services: request `i` carries tenant `i % KEYS` in its `x-tenant` header.
async fn drive_http<S>(svc: &mut S, tenants: &[HeaderValue], iters: u64)
where
    S: Service<http::Request<()>, Response = http::Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let name = HeaderName::from_static(TENANT);
    for i in 0..iters {
        let mut req = http::Request::new(());
        let tenant = black_box(&tenants[usize::try_from(i % KEYS).expect("key")]);
        req.headers_mut().insert(name.clone(), tenant.clone());
        let out = svc
            .ready()
            .await
            .expect("ready")
            .call(req)
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

    let tenants: Vec<HeaderValue> = (0..KEYS)
        .map(|k| HeaderValue::try_from(format!("tenant-{k}")).expect("header value"))
        .collect();
    let tenants = &tenants;
    let mut group = c.benchmark_group("ratelimit/keyed-http");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut svc = bare_http();
            let start = std::time::Instant::now();
            drive_http(&mut svc, tenants, iters).await;
            start.elapsed()
        });
    });
    group.bench_function("switchyard/keyed service", |b| {
        let layer = KeyedRateLimitLayer::new(
            "bench",
            &config(),
            switchyard_ratelimit::key::header::<()>(TENANT),
        )
        .expect("config");
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = layer.layer(bare_http());
            async move {
                let start = std::time::Instant::now();
                drive_http(&mut svc, tenants, iters).await;
                start.elapsed()
            }
        });
    });
    group.bench_function("tower_governor/GovernorLayer", |b| {
        // The same quota as `config()`: a token every nanosecond, a burst of a million.
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(1_000_000)
            .key_extractor(TenantHeader)
            .finish()
            .expect("config");
        let layer = tower_governor::GovernorLayer::<_, _, Body>::new(config);
        b.to_async(&rt).iter_custom(|iters| {
            let mut svc = layer.layer(bare_http());
            async move {
                let start = std::time::Instant::now();
                drive_http(&mut svc, tenants, iters).await;
                start.elapsed()
            }
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
