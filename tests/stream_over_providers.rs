//! Crates stacked: a client-stream pipeline (switchyard-stream) whose handler is a provider
//! manager (switchyard-provider) selecting between two providers by priority
//! (switchyard-balance), the primary wrapped in a retry stack (switchyard-resilience). The
//! primary goes offline halfway: the stream goes on over the standby, in per-key order, and
//! every message succeeds.

#![cfg(all(feature = "stream", feature = "provider"))]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use switchyard::balance::Health;
use switchyard::provider::{Manager, Provider, ProviderRegistry, Selection, patterns};
use switchyard::resilience::ResilienceConfig;
use switchyard::stream::{Message, Pipeline, StreamConfig};
use tower::{BoxError, service_fn};

type Entry = (String, u64);
/// Which provider applied each message, per key, in order.
type Applied = Arc<Mutex<HashMap<String, Vec<(u64, &'static str)>>>>;

fn provider(name: &'static str, applied: &Applied, flaky: bool) -> Provider<Message<Entry>, ()> {
    let applied = Arc::clone(applied);
    let failed_once = Arc::new(Mutex::new(HashSet::new()));
    Provider::new(service_fn(move |m: Message<Entry>| {
        let applied = Arc::clone(&applied);
        // The flaky one fails the first try of every fifth message: its retry stack absorbs
        // that.
        let failing = flaky && m.seq.is_multiple_of(5) && failed_once.lock().unwrap().insert(m.seq);
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if failing {
                return Err::<(), BoxError>("primary hiccup".into());
            }
            applied
                .lock()
                .unwrap()
                .entry(m.item.0.clone())
                .or_default()
                .push((m.item.1, name));
            Ok(())
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_stream_rides_over_a_provider_failover_in_order() {
    let applied = Applied::default();
    let registry = Arc::new(ProviderRegistry::<Message<Entry>, ()>::new());
    registry.register("primary", {
        let applied = Arc::clone(&applied);
        move |_: &serde_json::Value| Ok::<_, BoxError>(provider("primary", &applied, true))
    });
    registry.register("standby", {
        let applied = Arc::clone(&applied);
        move |_: &serde_json::Value| Ok::<_, BoxError>(provider("standby", &applied, false))
    });
    let manager = Manager::new(
        "ledger-backends",
        registry,
        Selection::Priority(vec!["primary".into(), "standby".into()]),
    );
    let retry = ResilienceConfig::from_json(r#"{ "retry": { "max_attempts": 3 } }"#).unwrap();
    manager
        .initialize_with(
            "primary",
            &json!({}),
            patterns::request_response("primary", &retry).unwrap(),
        )
        .await
        .unwrap();
    manager.initialize("standby", &json!({})).await.unwrap();

    let options = StreamConfig::from_json(
        r#"{ "ordering": { "mode": "keyed_fifo" },
             "backpressure": { "policy": "queue", "capacity": 8 } }"#,
    )
    .unwrap();
    let pipeline =
        Pipeline::keyed("ledger", options, manager.clone(), |e: &Entry| e.0.as_str()).unwrap();

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Entry, tonic::Status>>();
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let run = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.run(stream).await }
    });
    let mut numbers: HashMap<String, u64> = HashMap::new();
    let mut send = |count: u64| {
        for i in 0..count {
            let key = format!("acct-{}", i % 10);
            let number = numbers.entry(key.clone()).or_default();
            *number += 1;
            tx.send(Ok((key, *number))).unwrap();
        }
    };
    send(300);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The primary is taken offline by hand mid-stream.
    manager.set_health("primary", Health::Offline).unwrap();
    send(300);
    drop(tx);
    let summary = run.await.unwrap();

    assert_eq!(
        (summary.received, summary.succeeded),
        (600, 600),
        "{summary:?}"
    );
    summary.status().unwrap();
    let applied = applied.lock().unwrap();
    let mut by = HashMap::new();
    for (key, entries) in applied.iter() {
        let order: Vec<u64> = entries.iter().map(|(n, _)| *n).collect();
        let expected: Vec<u64> = (1..=numbers[key]).collect();
        assert_eq!(order, expected, "{key} applied out of order or twice");
        for (_, name) in entries {
            *by.entry(*name).or_insert(0) += 1;
        }
    }
    assert!(by["primary"] > 0 && by["standby"] > 0, "{by:?}");
    assert_eq!(manager.stats()[0].health, Health::Offline);
}
