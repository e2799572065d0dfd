//! The added cost of a whole resilience stack on the success path, against a bare service, the
//! equivalent tower-resilience stack and tower's built-ins, in one run.
//!
//! Every contender wraps the same `service_fn` answering at once, outermost first: rate limit
//! (a quota far above the call rate) → bulkhead (1,024 slots) → circuit breaker (default trip)
//! → retry (3 attempts) → timeout (1 s). Every call succeeds, so nothing is ever rejected,
//! retried or timed out. tower-resilience's layers each wrap errors in their own type: a
//! `MapErr` after each boxes them, so every contender answers `BoxError`. tower has no circuit
//! breaker and its rate limit is not `Clone`, so its stack is concurrency limit → retry (a
//! policy that never retries, cloning the request as a retrying one must) → timeout. Services
//! are driven by `ready().await` then `call(i).await` on a current-thread runtime.
//!
//! `cargo bench -p switchyard-resilience --bench stack`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::future::{Ready, ready};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_core::test_util::drive;
use switchyard_resilience::{ResilienceConfig, ResilienceLayer};
use tower::util::MapErr;
use tower::{BoxError, Layer, Service, service_fn};
use tower_resilience::bulkhead::{BulkheadLayer, BulkheadServiceError};
use tower_resilience::circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};
use tower_resilience::ratelimiter::{RateLimiterLayer, RateLimiterServiceError};
use tower_resilience::retry::RetryBudgetBuilder;
use tower_resilience::retry::RetryLayer;
use tower_resilience::timelimiter::{TimeLimiterError, TimeLimiterLayer};

const CONFIG: &str = r#"{
    "timeout": "1s",
    "rate_limit": { "rate": "1000000/1ms", "burst": 1000000 },
    "bulkhead": { "max_concurrent_calls": 1024 },
    "circuit_breaker": {},
    "retry": { "max_attempts": 3 }
}"#;

/// `CONFIG`, one section at a time (`none`: every layer left out, the `Either` chain alone).
const SECTIONS: [(&str, &str); 6] = [
    ("none", "{}"),
    (
        "rate_limit",
        r#"{ "rate_limit": { "rate": "1000000/1ms", "burst": 1000000 } }"#,
    ),
    (
        "bulkhead",
        r#"{ "bulkhead": { "max_concurrent_calls": 1024 } }"#,
    ),
    ("circuit_breaker", r#"{ "circuit_breaker": {} }"#),
    ("retry", r#"{ "retry": { "max_attempts": 3 } }"#),
    ("timeout", r#"{ "timeout": "1s" }"#),
];

const SLOTS: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(1);

type Bare = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, BoxError>>>;

fn bare() -> Bare {
    service_fn(|n: u64| ready(Ok::<u64, BoxError>(n)))
}

fn switchyard() -> impl Service<u64, Response = u64, Error = BoxError> {
    ResilienceLayer::new(
        "bench",
        &ResilienceConfig::from_json(CONFIG).expect("config"),
    )
    .expect("stack")
    .layer(bare())
}

/// Boxes a tower-resilience layer's error, so the next layer up sees `BoxError` again.
fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> BoxError {
    Box::new(e)
}

/// RateLimiter → Bulkhead → CircuitBreaker → Retry → TimeLimiter, with `budget` (retries
/// unlimited when `false`, tower-resilience's default).
fn tower_resilience(
    budget: bool,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static {
    let svc = TimeLimiterLayer::builder()
        .timeout_duration(TIMEOUT)
        .build()
        .layer(bare());
    let svc = MapErr::new(svc, boxed::<TimeLimiterError<BoxError>>);
    let retry = RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100));
    let retry = if budget {
        // Like tower's default budget: a retry per ten calls, ten a second at least.
        retry.budget(
            RetryBudgetBuilder::new()
                .token_bucket()
                .tokens_per_second(10.0)
                .max_tokens(100)
                .initial_tokens(10)
                .build()
                .expect("budget"),
        )
    } else {
        retry
    };
    let svc = retry.build().layer(svc);
    let svc = CircuitBreakerLayer::builder()
        .build()
        .expect("breaker")
        .layer(svc);
    let svc = MapErr::new(svc, boxed::<CircuitBreakerError<BoxError>>);
    let svc = BulkheadLayer::builder()
        .max_concurrent_calls(SLOTS)
        .build()
        .expect("bulkhead")
        .layer(svc);
    let svc = MapErr::new(svc, boxed::<BulkheadServiceError<BoxError>>);
    let svc = RateLimiterLayer::builder()
        .limit_for_period(1_000_000)
        .refresh_period(Duration::from_millis(1))
        .build()
        .expect("rate limiter")
        .layer(svc);
    MapErr::new(svc, boxed::<RateLimiterServiceError<BoxError>>)
}

/// A retry policy that never retries, but clones each request as a retrying policy must.
#[derive(Clone, Copy)]
struct NeverRetry;

impl tower::retry::Policy<u64, u64, BoxError> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, _result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        None
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// ConcurrencyLimit → Retry → Timeout.
fn tower_builtins() -> impl Service<u64, Response = u64, Error = BoxError> {
    tower::ServiceBuilder::new()
        .concurrency_limit(SLOTS)
        .retry(NeverRetry)
        .timeout(TIMEOUT)
        .service(bare())
}

/// Drives `iters` calls through `svc`.
fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("resilience/stack");
    macro_rules! bench_service {
        ($group:ident, $name:expr, $make:expr) => {
            $group.bench_function($name, |b| {
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
    bench_service!(group, "bare", bare());
    bench_service!(group, "switchyard/ResilienceLayer", switchyard());
    bench_service!(group, "tower-resilience", tower_resilience(false));
    bench_service!(
        group,
        "tower-resilience (retry budget)",
        tower_resilience(true)
    );
    bench_service!(group, "tower/builtins", tower_builtins());
    group.finish();

    // Where switchyard's figure goes: the same stack with one section at a time.
    let mut group = c.benchmark_group("resilience/one-section");
    for (section, json) in SECTIONS {
        let layer =
            ResilienceLayer::new("bench", &ResilienceConfig::from_json(json).expect("config"))
                .expect("stack");
        bench_service!(group, format!("switchyard/{section}"), layer.layer(bare()));
    }
    group.finish();
}

criterion_group! {
    name = stack;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(stack);
