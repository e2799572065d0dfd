//! What the router costs: local dispatch against calling the same service directly, lookup in a
//! table of 10 and of 10,000 routes, and a reload of 10,000 routes with one changed (the rebuild
//! alone, and read from SQLite then rebuilt), in one run.
//!
//! The service is a `service_fn` answering its payload at once. "direct" clones and calls it
//! as the router does (the router clones a route's boxed service per call, so `direct (boxed)`
//! is the like-for-like baseline); "router" calls `Router::dispatch` with the service registered
//! as a local service with no config row (no stack).
//!
//! `cargo bench -p switchyard-router --bench router`; figures in docs/benchmarks.md.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use switchyard_router::{RouteRow, Router, SqliteSource};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt, service_fn};

fn echo() -> BoxCloneSyncService<Bytes, Bytes, BoxError> {
    BoxCloneSyncService::new(service_fn(|b: Bytes| async move { Ok::<_, BoxError>(b) }))
}

/// `n` routes named `svc-0` .. `svc-{n-1}`, every one `local` to a registered echo service
/// except every third, which is `noop`.
fn rows(n: usize) -> Vec<RouteRow> {
    (0..n)
        .map(|i| {
            RouteRow::new(
                format!("svc-{i}"),
                if i % 3 == 0 { "noop" } else { "local" },
            )
        })
        .collect()
}

fn router_with(n: usize) -> Router {
    let router = Router::empty();
    for i in 0..n {
        router.register_local(format!("svc-{i}"), echo());
    }
    router.reload(rows(n));
    router
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let payload = Bytes::from_static(b"$100");

    let mut group = c.benchmark_group("router/dispatch");
    let direct = service_fn(|b: Bytes| async move { Ok::<_, BoxError>(b) });
    group.bench_function("direct", |b| {
        b.to_async(&rt).iter(|| {
            let svc = direct;
            let payload = payload.clone();
            async move { black_box(svc.oneshot(black_box(payload)).await.expect("call")) }
        });
    });
    let boxed = echo();
    group.bench_function("direct (boxed)", |b| {
        b.to_async(&rt).iter(|| {
            let svc = boxed.clone();
            let payload = payload.clone();
            async move { black_box(svc.oneshot(black_box(payload)).await.expect("call")) }
        });
    });
    let local = Router::empty();
    local.register_local("billing", echo());
    group.bench_function("router local (1 service)", |b| {
        b.to_async(&rt).iter(|| {
            let call = local.dispatch(black_box("billing"), payload.clone());
            async move { black_box(call.await.expect("call")) }
        });
    });
    for n in [10, 10_000] {
        let router = router_with(n);
        let name = format!("svc-{}", n / 2 + 2);
        assert!(!router.route(&name).expect("route").is_noop());
        group.bench_function(format!("router local ({n} routes)"), |b| {
            b.to_async(&rt).iter(|| {
                let call = router.dispatch(black_box(&name), payload.clone());
                async move { black_box(call.await.expect("call")) }
            });
        });
        let mut as_service = router.clone();
        group.bench_function(format!("router as Service ({n} routes)"), |b| {
            b.to_async(&rt).iter(|| {
                let call = as_service.call((black_box(name.as_str()), payload.clone()));
                async move { black_box(call.await.expect("call")) }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("router/reload-10k-1-changed");
    group.sample_size(20);
    let router = router_with(10_000);
    let mut flip = false;
    group.bench_function("rebuild", |b| {
        b.iter_batched(
            || {
                let mut rows = rows(10_000);
                flip = !flip;
                rows[5_000].strategy = if flip { "noop".into() } else { "local".into() };
                rows
            },
            |rows| {
                let report = router.reload(rows);
                assert_eq!(report.changed, 1);
                black_box(report)
            },
            BatchSize::LargeInput,
        );
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.db");
    let source = SqliteSource::open(&path).expect("open");
    {
        let mut conn = switchyard_router::sqlite::open(&path).expect("open");
        let tx = conn.transaction().expect("tx");
        for row in rows(10_000) {
            tx.execute(
                "INSERT INTO routes (service_name, strategy) VALUES (?1, ?2)",
                [&row.service_name, &row.strategy],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let shell = switchyard_router::sqlite::open(&path).expect("open");
    let router = router_with(10_000);
    rt.block_on(router.reload_from(&source)).expect("reload");
    let mut flip = false;
    group.bench_function("read from SQLite + rebuild", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                shell
                    .execute(
                        "UPDATE routes SET strategy = ?1 WHERE service_name = 'svc-5000'",
                        [if flip { "noop" } else { "local" }],
                    )
                    .expect("update");
            },
            |()| {
                let report = rt.block_on(router.reload_from(&source)).expect("reload");
                assert_eq!(report.changed, 1);
                black_box(report)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group! {
    name = router;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(router);
