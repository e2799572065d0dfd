//! The retry layer through its public API, under paused tokio time: backoff sequences, jitter,
//! the budget, rejections and their `retry_after`, classification, and metrics.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use switchyard_core::test_util::{Recorded, ms};
use switchyard_core::{BoxError, Outcome, Rejection, RejectionKind, classify_fn};
use switchyard_retry::{BackoffConfig, BudgetConfig, Jitter, RetryConfig, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A backend answering from a script (the last answer repeats) and noting when each attempt
/// arrived, relative to its creation.
#[derive(Clone)]
struct Backend {
    script: Arc<Vec<Answer>>,
    arrivals: Arc<Mutex<Vec<Duration>>>,
    start: Instant,
}

#[derive(Clone, Copy)]
enum Answer {
    Ok(u32),
    Fail,
    Refuse(RejectionKind, Option<Duration>),
}

impl Backend {
    fn new(script: &[Answer]) -> Self {
        Self {
            script: Arc::new(script.to_vec()),
            arrivals: Arc::default(),
            start: Instant::now(),
        }
    }

    fn attempts(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    fn arrivals(&self) -> Vec<Duration> {
        self.arrivals.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + use<> {
        let backend = self.clone();
        service_fn(move |_req: u32| {
            let mut arrivals = backend.arrivals.lock().unwrap();
            let n = arrivals.len();
            arrivals.push(backend.start.elapsed());
            let answer = backend.script[n.min(backend.script.len() - 1)];
            async move {
                match answer {
                    Answer::Ok(v) => Ok(v),
                    Answer::Fail => Err("backend failed".into()),
                    Answer::Refuse(kind, retry_after) => {
                        Err(Box::new(Refused(kind, retry_after)) as BoxError)
                    }
                }
            }
        })
    }
}

/// A switchyard-style rejection of a chosen kind.
#[derive(Debug)]
struct Refused(RejectionKind, Option<Duration>);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

impl Rejection for Refused {
    fn kind(&self) -> RejectionKind {
        self.0
    }

    fn retry_after(&self) -> Option<Duration> {
        self.1
    }
}

fn config(max_attempts: u32) -> RetryConfig {
    switchyard_core::rejection::register::<Refused>();
    RetryConfig::new(max_attempts)
        .with_backoff(BackoffConfig::new(ms(100), 2.0, ms(1000)))
        .with_jitter(Jitter::None)
        .with_budget(None)
}

async fn call<S: Service<u32, Response = u32, Error = BoxError>>(
    svc: &mut S,
) -> Result<u32, BoxError> {
    svc.ready().await?.call(1).await
}

#[tokio::test(start_paused = true)]
async fn attempts_follow_the_exponential_backoff_until_max_attempts() {
    let backend = Backend::new(&[Answer::Fail]);
    let mut svc = RetryLayer::new("r", &config(5))
        .unwrap()
        .layer(backend.service());
    let err = call(&mut svc).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "backend failed",
        "the last error is returned as is"
    );
    assert_eq!(
        backend.arrivals(),
        [ms(0), ms(100), ms(300), ms(700), ms(1500)],
        "delays 100, 200, 400, 800 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_the_retries() {
    let backend = Backend::new(&[Answer::Fail, Answer::Ok(7)]);
    let mut svc = RetryLayer::new("r", &config(5))
        .unwrap()
        .layer(backend.service());
    assert_eq!(call(&mut svc).await.unwrap(), 7);
    assert_eq!(backend.arrivals(), [ms(0), ms(100)]);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_never_retries() {
    let backend = Backend::new(&[Answer::Fail, Answer::Ok(7)]);
    let mut svc = RetryLayer::new("r", &config(1))
        .unwrap()
        .layer(backend.service());
    assert!(call(&mut svc).await.is_err());
    assert_eq!(backend.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_gives_the_same_delays_and_stays_within_the_backoff() {
    let arrivals = |seed| async move {
        let backend = Backend::new(&[Answer::Fail]);
        let layer = RetryLayer::new("r", &config(5).with_jitter(Jitter::Full))
            .unwrap()
            .with_seed(seed);
        let mut svc = layer.layer(backend.service());
        call(&mut svc).await.unwrap_err();
        backend.arrivals()
    };
    let first = arrivals(3).await;
    assert_eq!(first, arrivals(3).await, "the same seed, the same sequence");
    assert_ne!(first, arrivals(4).await, "another seed, other delays");
    let delays: Vec<_> = first.windows(2).map(|w| w[1] - w[0]).collect();
    for (delay, ceiling) in delays.iter().zip([100, 200, 400, 800]) {
        assert!(*delay <= ms(ceiling), "{delay:?} over {ceiling} ms");
    }
}

#[tokio::test(start_paused = true)]
async fn equal_jitter_never_retries_sooner_than_half_the_backoff() {
    let backend = Backend::new(&[Answer::Fail]);
    let layer = RetryLayer::new("r", &config(4).with_jitter(Jitter::Equal))
        .unwrap()
        .with_seed(11);
    let mut svc = layer.layer(backend.service());
    call(&mut svc).await.unwrap_err();
    let arrivals = backend.arrivals();
    let delays: Vec<_> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    for (delay, full) in delays.iter().zip([100, 200, 400]) {
        assert!(
            (ms(full / 2)..=ms(full)).contains(delay),
            "{delay:?} for {full} ms"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_once_spent_and_recovers_after_its_ttl() {
    // No share of first attempts, one retry a second in reserve.
    let budget = BudgetConfig {
        ttl: Duration::from_secs(1),
        min_per_sec: 1,
        retry_ratio: 0.0,
    };
    let backend = Backend::new(&[Answer::Fail]);
    let layer = RetryLayer::new(
        "r",
        &config(5)
            .with_backoff(BackoffConfig::constant(ms(10)))
            .with_budget(Some(budget)),
    )
    .unwrap();
    let mut svc = layer.layer(backend.service());
    let mut clone = svc.clone();

    call(&mut svc).await.unwrap_err();
    assert_eq!(
        backend.attempts(),
        2,
        "one retry from the reserve, then the budget is spent"
    );
    call(&mut clone).await.unwrap_err();
    assert_eq!(
        backend.attempts(),
        3,
        "a clone shares the spent budget: no retry"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    call(&mut svc).await.unwrap_err();
    assert_eq!(
        backend.attempts(),
        5,
        "the withdrawal expired: one retry again"
    );
}

#[tokio::test(start_paused = true)]
async fn first_attempts_earn_retries_at_the_budget_ratio() {
    // Half a retry per first attempt, no reserve: ten successful calls earn five retries.
    let budget = BudgetConfig {
        ttl: Duration::from_secs(10),
        min_per_sec: 0,
        retry_ratio: 0.5,
    };
    let healthy = Backend::new(&[Answer::Ok(1)]);
    let failing = Backend::new(&[Answer::Fail]);
    let layer = RetryLayer::new(
        "r",
        &config(100)
            .with_backoff(BackoffConfig::constant(ms(1)))
            .with_budget(Some(budget)),
    )
    .unwrap();
    let mut good = layer.layer(healthy.service());
    for _ in 0..10 {
        call(&mut good).await.unwrap();
    }
    let mut bad = layer.layer(failing.service());
    call(&mut bad).await.unwrap_err();
    // Its own first attempt adds half a retry: 5.5 retries in the budget, 5 whole ones.
    assert_eq!(failing.attempts(), 1 + 5);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_retried_no_sooner_than_its_retry_after() {
    let backend = Backend::new(&[
        Answer::Refuse(RejectionKind::RateLimited, Some(ms(750))),
        Answer::Ok(9),
    ]);
    let mut svc = RetryLayer::new("r", &config(3))
        .unwrap()
        .layer(backend.service());
    assert_eq!(call(&mut svc).await.unwrap(), 9);
    assert_eq!(
        backend.arrivals(),
        [ms(0), ms(750)],
        "750 ms asked, over the 100 ms backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_max_retry_after_is_answered_at_once() {
    let backend = Backend::new(&[
        Answer::Refuse(RejectionKind::CircuitOpen, Some(Duration::from_secs(60))),
        Answer::Ok(9),
    ]);
    let mut svc = RetryLayer::new("r", &config(3))
        .unwrap()
        .layer(backend.service());
    let start = Instant::now();
    let err = call(&mut svc).await.unwrap_err();
    assert_eq!(err.to_string(), "refused: circuit_open");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(backend.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn terminal_rejections_are_never_retried() {
    for kind in RejectionKind::ALL.into_iter().filter(|k| k.is_terminal()) {
        let backend = Backend::new(&[Answer::Refuse(kind, None), Answer::Ok(1)]);
        let mut svc = RetryLayer::new("r", &config(5))
            .unwrap()
            .layer(backend.service());
        call(&mut svc).await.unwrap_err();
        assert_eq!(backend.attempts(), 1, "{kind} was retried");
    }
}

#[tokio::test(start_paused = true)]
async fn non_terminal_rejections_are_retried_even_when_the_classifier_ignores_errors() {
    let backend = Backend::new(&[
        Answer::Refuse(RejectionKind::BulkheadFull, None),
        Answer::Ok(2),
    ]);
    let layer = RetryLayer::new("r", &config(3))
        .unwrap()
        .with_classifier(classify_fn(|_: Result<&u32, &BoxError>| Outcome::Ignored));
    let mut svc = layer.layer(backend.service());
    assert_eq!(call(&mut svc).await.unwrap(), 2);
    assert_eq!(backend.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_which_responses_and_errors_are_retried() {
    // Responses of 0 are failures; errors are ignored (not retried).
    let classifier = classify_fn(|result: Result<&u32, &BoxError>| match result {
        Ok(0) => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignored,
    });
    let zero_then_five = Backend::new(&[Answer::Ok(0), Answer::Ok(5)]);
    let layer = RetryLayer::new("r", &config(3))
        .unwrap()
        .with_classifier(classifier);
    let mut svc = layer.layer(zero_then_five.service());
    assert_eq!(call(&mut svc).await.unwrap(), 5);
    assert_eq!(zero_then_five.attempts(), 2);

    let failing = Backend::new(&[Answer::Fail, Answer::Ok(5)]);
    let mut svc = layer.layer(failing.service());
    call(&mut svc).await.unwrap_err();
    assert_eq!(failing.attempts(), 1, "an ignored error is not retried");
}

#[tokio::test(start_paused = true)]
async fn a_caller_dropping_the_call_stops_its_retries() {
    let backend = Backend::new(&[Answer::Fail]);
    let mut svc = RetryLayer::new("r", &config(5))
        .unwrap()
        .layer(backend.service());
    svc.ready().await.unwrap();
    let call = svc.call(1);
    tokio::select! {
        _ = call => panic!("every attempt fails and the call ends later"),
        () = tokio::time::sleep(ms(150)) => {}
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        backend.attempts(),
        2,
        "attempts at 0 and 100 ms, none after the drop"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_and_give_ups_are_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let backend = Backend::new(&[Answer::Fail]);
    let terminal = Backend::new(&[Answer::Refuse(RejectionKind::ServiceNotFound, None)]);
    let layer =
        metrics::with_local_recorder(&recorder, || RetryLayer::new("orders", &config(3)).unwrap());
    let mut svc = layer.layer(backend.service());
    call(&mut svc).await.unwrap_err();
    let mut svc = layer.layer(terminal.service());
    call(&mut svc).await.unwrap_err();

    let recorded = Recorded::take(&snapshotter);
    assert_eq!(
        recorded.counter("switchyard_retry_retries_total", &[("retry", "orders")]),
        Some(2)
    );
    let given_up = |reason| {
        recorded.counter(
            "switchyard_retry_not_retried_total",
            &[("retry", "orders"), ("reason", reason)],
        )
    };
    assert_eq!(given_up("attempts"), Some(1));
    assert_eq!(given_up("terminal"), Some(1));
    assert_eq!(given_up("retry_after"), Some(0), "no refusal asked to wait");
}

#[test]
fn the_retry_service_and_its_future_are_send_sync_and_static() {
    fn is_send_sync_static<T: Send + Sync + 'static>(_: &T) {}
    let svc = RetryLayer::new("r", &RetryConfig::default())
        .unwrap()
        .layer(service_fn(|n: u32| {
            std::future::ready(Ok::<_, BoxError>(n))
        }));
    is_send_sync_static(&svc);
    let mut svc = svc;
    is_send_sync_static(&svc.call(1));
}
