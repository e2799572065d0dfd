//! The adaptive (AIMD) limit: it shrinks under a slow or failing backend, grows back when the
//! backend recovers and the slots are used, and settles where latency stays under the
//! threshold. Driven with paused time and a simulated backend.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchyard_bulkhead::{
    AdaptiveConfig, AdmissionController, BulkheadConfig, BulkheadLayer, BulkheadPolicy,
};
use switchyard_core::test_util::ms;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

fn adaptive(start: u32, min: u32, max: u32, policy: BulkheadPolicy) -> BulkheadConfig {
    BulkheadConfig::new(start, policy).with_adaptive(AdaptiveConfig::new(min, max, ms(100)))
}

#[test]
fn a_congestion_signal_shrinks_the_limit_multiplicatively_down_to_the_minimum() {
    let controller =
        AdmissionController::new("b", &adaptive(10, 2, 20, BulkheadPolicy::HardReject)).unwrap();
    controller.record(false, ms(1));
    assert_eq!(controller.limit(), 9);
    controller.record(true, ms(500));
    assert_eq!(controller.limit(), 8, "a slow success is congestion too");
    for _ in 0..20 {
        controller.record(false, ms(1));
    }
    assert_eq!(controller.limit(), 2);
    assert_eq!(controller.stats().max_concurrent_calls, 2);
}

#[test]
fn a_timely_success_grows_the_limit_only_while_half_the_slots_are_busy() {
    let controller =
        AdmissionController::new("b", &adaptive(4, 1, 6, BulkheadPolicy::HardReject)).unwrap();
    let one = controller.try_acquire().unwrap();
    controller.record(true, ms(1));
    assert_eq!(controller.limit(), 4, "1 of 4 busy: no growth");
    let two = controller.try_acquire().unwrap();
    controller.record(true, ms(1));
    assert_eq!(controller.limit(), 5, "2 of 4 busy: +1");
    let three = controller.try_acquire().unwrap();
    controller.record(true, ms(1));
    controller.record(true, ms(1));
    assert_eq!(controller.limit(), 6, "capped at max_limit");
    drop((one, two, three));
}

#[test]
fn the_hard_reject_policy_enforces_the_adapted_limit() {
    let controller =
        AdmissionController::new("b", &adaptive(3, 1, 3, BulkheadPolicy::HardReject)).unwrap();
    controller.record(false, ms(1));
    controller.record(false, ms(1));
    assert_eq!(controller.limit(), 1);
    let held = controller.try_acquire().unwrap();
    assert!(
        controller.try_acquire().is_err(),
        "one slot after the limit fell to 1"
    );
    drop(held);
    assert!(controller.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_queue_keeps_slots_in_use_when_its_limit_falls_and_retires_them_as_they_return() {
    let queue = BulkheadPolicy::Queue {
        capacity: 8,
        max_wait: ms(10),
    };
    let controller = AdmissionController::new("q", &adaptive(4, 1, 8, queue)).unwrap();
    let mut held: Vec<_> = (0..4).map(|_| controller.try_acquire().unwrap()).collect();
    controller.record(false, ms(1));
    assert_eq!(controller.limit(), 3);
    assert_eq!(
        controller.stats().in_flight,
        4,
        "the four calls already admitted run on"
    );

    held.pop();
    assert_eq!(controller.stats().in_flight, 3);
    assert!(
        controller.try_acquire().is_err(),
        "the returned slot was retired, not reused"
    );
    held.pop();
    assert_eq!(controller.stats().in_flight, 2);
    held.push(
        controller
            .try_acquire()
            .expect("back under the lowered limit"),
    );
    assert!(controller.try_acquire().is_err());

    // Growth first forgives what is still owed, then adds slots.
    for p in &held {
        p.record(true, ms(1));
    }
    assert_eq!(controller.limit(), 6);
    assert!(controller.try_acquire().is_ok());
    drop(held);
    assert_eq!(controller.stats().in_flight, 0);
}

/// A backend whose latency grows with its load: 20 ms per call in flight, so it stays under
/// the 100 ms threshold up to 5 concurrent calls.
fn loaded_backend() -> (
    impl Service<
        u32,
        Response = u32,
        Error = BoxError,
        Future = impl Future<Output = Result<u32, BoxError>> + Send,
    > + Clone
    + Send,
    Arc<AtomicU32>,
) {
    let peak = Arc::new(AtomicU32::new(0));
    let load = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&peak);
    let svc = service_fn(move |n: u32| {
        let (load, peak) = (Arc::clone(&load), Arc::clone(&peak));
        async move {
            let now = load.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(ms(20) * now).await;
            load.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(n)
        }
    });
    (svc, seen)
}

#[tokio::test(start_paused = true)]
async fn the_limit_settles_where_the_backend_answers_within_the_threshold() {
    let (backend, _) = loaded_backend();
    let layer =
        BulkheadLayer::new("settle", &adaptive(20, 1, 40, BulkheadPolicy::HardReject)).unwrap();
    let controller = layer.controller().clone();
    let svc = layer.layer(backend);

    // Twenty eager clients, each making 40 calls and backing off 5 ms when refused.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < 40 {
                    match svc.ready().await.unwrap().call(done).await {
                        Ok(_) => done += 1,
                        Err(_) => tokio::time::sleep(ms(5)).await,
                    }
                }
            })
        })
        .collect();
    // Sample the limit every 20 ms while the clients run.
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let (controller, samples) = (controller.clone(), Arc::clone(&samples));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ms(20)).await;
                samples.lock().unwrap().push(controller.limit());
            }
        })
    };
    for client in clients {
        client.await.unwrap();
    }
    recorder.abort();

    // The middle half of the run, when every client is busy: in the tail, as clients finish
    // and the load falls, the limit rightly grows again.
    let samples = samples.lock().unwrap().clone();
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    let mean = f64::from(middle.iter().sum::<u32>()) / middle.len() as f64;
    assert!(
        (3.0..=8.0).contains(&mean),
        "the limit should settle near the backend's 5-call knee, averaged {mean:.1} over {middle:?}"
    );
    assert!(
        controller.stats().rejected > 0,
        "the clients did press against the limit"
    );
}

#[test]
fn each_bad_adaptive_field_is_named() {
    let start = 10;
    let good = AdaptiveConfig::new(2, 20, ms(100));
    let cases: Vec<(AdaptiveConfig, &str)> = vec![
        (
            AdaptiveConfig {
                min_limit: 0,
                ..good
            },
            "adaptive.min_limit",
        ),
        (
            AdaptiveConfig {
                min_limit: 11,
                ..good
            },
            "adaptive.min_limit",
        ),
        (
            AdaptiveConfig {
                max_limit: 9,
                ..good
            },
            "adaptive.max_limit",
        ),
        (
            AdaptiveConfig {
                max_limit: switchyard_bulkhead::MAX_CONCURRENT_CALLS + 1,
                ..good
            },
            "adaptive.max_limit",
        ),
        (
            AdaptiveConfig {
                latency_threshold: Duration::ZERO,
                ..good
            },
            "adaptive.latency_threshold",
        ),
        (
            AdaptiveConfig {
                decrease_factor: 1.0,
                ..good
            },
            "adaptive.decrease_factor",
        ),
        (
            AdaptiveConfig {
                decrease_factor: f64::NAN,
                ..good
            },
            "adaptive.decrease_factor",
        ),
        (
            AdaptiveConfig {
                increase_by: 0,
                ..good
            },
            "adaptive.increase_by",
        ),
    ];
    for (adaptive, field) in cases {
        let config = BulkheadConfig::new(start, BulkheadPolicy::HardReject).with_adaptive(adaptive);
        let err = config.validate().expect_err(field);
        assert_eq!(err.field(), field, "{adaptive:?}");
        assert_eq!(
            BulkheadLayer::new("b", &config).unwrap_err(),
            err,
            "the layer reports the same error"
        );
    }
    let ok = BulkheadConfig::new(start, BulkheadPolicy::HardReject).with_adaptive(good);
    assert_eq!(ok.validate(), Ok(()));
}
