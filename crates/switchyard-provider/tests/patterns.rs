//! The four interaction patterns' resilience rules, each checked against the rule it must not
//! break: a duplex open is never retried and holds no bulkhead slot, a stream's items are not
//! rate-limited or timed, request-response and sink get the whole stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use switchyard_core::{RejectionKind, find_rejection};
use switchyard_provider::DuplexChannel;
use switchyard_provider::patterns::{self, Pattern};
use switchyard_resilience::ResilienceConfig;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

fn config(json: &str) -> ResilienceConfig {
    ResilienceConfig::from_json(json).unwrap()
}

fn kind(err: &BoxError) -> Option<RejectionKind> {
    find_rejection(&**err).map(|r| r.kind())
}

/// Opens that fail, counting each attempt.
fn failing_opener(
    opens: &Arc<AtomicUsize>,
) -> impl Service<u32, Response = DuplexChannel<u32, u32>, Error = BoxError, Future: Send> + Clone {
    let opens = Arc::clone(opens);
    service_fn(move |_: u32| {
        opens.fetch_add(1, Ordering::SeqCst);
        async { Err::<DuplexChannel<u32, u32>, BoxError>("connection refused".into()) }
    })
}

#[tokio::test(start_paused = true)]
async fn a_duplex_open_is_never_retried_where_a_request_is() {
    let config = config(r#"{ "retry": { "max_attempts": 4 } }"#);

    let opens = Arc::new(AtomicUsize::new(0));
    let duplex = patterns::duplex("ws", &config)
        .unwrap()
        .layer(failing_opener(&opens));
    duplex.oneshot(1).await.unwrap_err();
    assert_eq!(opens.load(Ordering::SeqCst), 1, "duplex: one attempt");

    let calls = Arc::new(AtomicUsize::new(0));
    let request = patterns::request_response("rpc", &config)
        .unwrap()
        .layer(failing_opener(&calls));
    request.oneshot(1).await.unwrap_err();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "request-response: every attempt"
    );
}

/// Opens a channel after `delay`, echoing what is sent to it.
fn echo_opener(
    delay: Duration,
) -> impl Service<u32, Response = DuplexChannel<u32, u32>, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: u32| async move {
        tokio::time::sleep(delay).await;
        let (local, mut remote) = DuplexChannel::pair(8);
        tokio::spawn(async move {
            while let Some(item) = remote.recv().await {
                if remote.send(item * 10).await.is_err() {
                    break;
                }
            }
        });
        Ok::<_, BoxError>(local)
    })
}

#[tokio::test(start_paused = true)]
async fn a_duplex_open_takes_no_bulkhead_slot_but_the_rate_limit_and_breaker_apply() {
    let bulkhead = config(r#"{ "bulkhead": { "max_concurrent_calls": 1 } }"#);
    // Two opens at once under a one-slot bulkhead: the duplex stack has none...
    let duplex = patterns::duplex("ws", &bulkhead)
        .unwrap()
        .layer(echo_opener(Duration::from_secs(1)));
    let (a, b) = tokio::join!(duplex.clone().oneshot(1), duplex.clone().oneshot(2));
    let (mut a, b) = (a.unwrap(), b.unwrap());
    a.send(4).await.unwrap();
    assert_eq!(a.recv().await, Some(40), "the channel works both ways");
    drop(b);
    // ...where a request-response stack refuses the second.
    let request = patterns::request_response("rpc", &bulkhead)
        .unwrap()
        .layer(echo_opener(Duration::from_secs(1)));
    let (a, b) = tokio::join!(request.clone().oneshot(1), request.clone().oneshot(2));
    assert!(a.is_ok());
    assert_eq!(kind(&b.unwrap_err()), Some(RejectionKind::BulkheadFull));

    let limited = config(r#"{ "rate_limit": { "rate": "1/s" } }"#);
    let duplex = patterns::duplex("ws", &limited)
        .unwrap()
        .layer(echo_opener(Duration::ZERO));
    duplex.clone().oneshot(1).await.unwrap();
    let err = duplex.clone().oneshot(2).await.unwrap_err();
    assert_eq!(kind(&err), Some(RejectionKind::RateLimited));

    let breaker = config(
        r#"{ "circuit_breaker": { "trip": { "consecutive_failures": { "threshold": 2 } } } }"#,
    );
    let opens = Arc::new(AtomicUsize::new(0));
    let duplex = patterns::duplex("ws", &breaker)
        .unwrap()
        .layer(failing_opener(&opens));
    for _ in 0..2 {
        duplex.clone().oneshot(1).await.unwrap_err();
    }
    let err = duplex.clone().oneshot(1).await.unwrap_err();
    assert_eq!(kind(&err), Some(RejectionKind::CircuitOpen));
    assert_eq!(
        opens.load(Ordering::SeqCst),
        2,
        "an open breaker stops opens"
    );
}

/// Opens a stream of `0..count`, each item `gap` after the last.
fn numbers(
    gap: Duration,
) -> impl Service<u32, Response = BoxStream<'static, u32>, Error = BoxError, Future: Send> + Clone {
    service_fn(move |count: u32| async move {
        let stream = futures::stream::iter(0..count)
            .then(move |n| async move {
                tokio::time::sleep(gap).await;
                n
            })
            .boxed();
        Ok::<_, BoxError>(stream)
    })
}

#[tokio::test(start_paused = true)]
async fn a_streams_items_are_not_rate_limited_or_timed_only_its_opening() {
    let config = config(r#"{ "rate_limit": { "rate": "1/s" }, "timeout": "50ms" }"#);
    let stream = patterns::stream("feed", &config)
        .unwrap()
        .layer(numbers(Duration::ZERO));
    let started = tokio::time::Instant::now();
    let items: Vec<u32> = stream.clone().oneshot(1000).await.unwrap().collect().await;
    assert_eq!(items.len(), 1000, "every item of one open");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no item waited for the limiter"
    );
    let Err(err) = stream.clone().oneshot(1).await else {
        panic!("a second open within the second was let through");
    };
    assert_eq!(
        kind(&err),
        Some(RejectionKind::RateLimited),
        "opens are limited"
    );

    // Items slower than the timeout still arrive: the timeout bounds the opening.
    let slow = patterns::stream("feed", &config)
        .unwrap()
        .layer(numbers(Duration::from_millis(200)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let items: Vec<u32> = slow.oneshot(3).await.unwrap().collect().await;
    assert_eq!(items, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_sink_gets_the_whole_stack() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let sink = {
        let attempts = Arc::clone(&attempts);
        service_fn(move |_event: String| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err::<(), BoxError>("broker unavailable".into())
                } else {
                    Ok(())
                }
            }
        })
    };
    let config =
        config(r#"{ "retry": { "max_attempts": 3 }, "bulkhead": { "max_concurrent_calls": 1 } }"#);
    let sink = patterns::sink("events", &config).unwrap().layer(sink);
    sink.oneshot("order placed".to_owned()).await.unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "retried until acknowledged"
    );
}

#[test]
fn a_bad_config_names_its_field_for_every_pattern() {
    let bad = ResilienceConfig {
        timeout: Some(Duration::ZERO),
        ..ResilienceConfig::default()
    };
    for pattern in [
        Pattern::RequestResponse,
        Pattern::Stream,
        Pattern::Sink,
        Pattern::Duplex,
    ] {
        let err = patterns::layer(pattern, "p", &bad).unwrap_err();
        assert_eq!(err.field(), "timeout", "{pattern:?}");
    }
}
