//! Property tests over random interleavings, keys, failures and retries; many streams and
//! many threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use switchyard_stream::{FailureKind, Message, Pipeline};
use tower::{BoxError, service_fn};

mod support;
use support::*;

/// How a random case ends: the stream closes, or the pipeline shuts down (draining).
#[derive(Debug, Clone)]
enum Ending {
    Close,
    Shutdown { after_ms: u64 },
}

/// A random case: messages, attempts, how it ends, keyed or not, and the policy and ordering
/// capacity.
type Case = (
    Vec<(u8, u32, u64)>,
    u32,
    Ending,
    bool,
    (&'static str, usize),
);

fn case() -> impl Strategy<Value = Case> {
    (
        // (key, failing attempts, arrival gap in ms)
        prop::collection::vec(
            (
                0u8..4,
                prop_oneof![6 => Just(0u32), 2 => 1u32..3, 1 => Just(u32::MAX), 1 => Just(PANIC)],
                0u64..5,
            ),
            // Up to 100: past a lane's first chunk (32 messages) in either mode.
            1..100,
        ),
        0u32..4,
        prop_oneof![
            Just(Ending::Close),
            (0u64..60).prop_map(|after_ms| Ending::Shutdown { after_ms })
        ],
        any::<bool>(),
        (
            prop_oneof![Just("queue"), Just("hard_reject"), Just("soft_allow")],
            prop_oneof![Just(0usize), 1usize..4],
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No two messages of one key ever run at once or out of order; every message is
    /// accounted for, and one skipped while its key went on is reported with a kind that
    /// breaks ordering; with drain-on-close and a long grace period, shutdown loses no
    /// admitted message.
    #[test]
    fn per_key_order_holds_and_nothing_is_lost(
        (messages, max_attempts, ending, keyed_mode, (policy, ordering_capacity)) in case()
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let recorder = Recorder::new(Duration::from_millis(3));
            let mode = if keyed_mode { "keyed_fifo" } else { "fifo" };
            let pipeline = keyed(
                options(&format!(
                    r#"{{ "ordering": {{ "mode": "{mode}", "capacity": {ordering_capacity} }},
                         "backpressure": {{ "policy": "{policy}", "capacity": 2 }},
                         "retry": {{ "max_attempts": {max_attempts}, "backoff": "1ms" }},
                         "shutdown": {{ "grace_period": "1h", "drain_on_close": true }} }}"#
                )),
                &recorder,
            );
            let (tx, stream) = channel();
            let feeder = tokio::spawn({
                let messages = messages.clone();
                async move {
                    for (key, failing, gap) in messages {
                        tokio::time::sleep(Duration::from_millis(gap)).await;
                        if tx.send(Ok((format!("k{key}"), failing))).is_err() {
                            return;
                        }
                    }
                }
            });
            let run = spawn_run(&pipeline, stream);
            if let Ending::Shutdown { after_ms } = ending {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                pipeline.shutdown().await;
            }
            feeder.await.unwrap();
            let summary = run.await.unwrap();

            let trace = recorder.trace.lock().unwrap();
            assert!(trace.max_per_key <= 1, "two messages of one key ran at once");
            if !keyed_mode {
                assert!(trace.max_running <= 1, "global FIFO ran two messages at once");
            }
            // Per lane, attempts never overlap and messages start in sequence order.
            let mut lanes: HashMap<String, Vec<&Attempt>> = HashMap::new();
            for attempt in &trace.attempts {
                let lane = if keyed_mode { attempt.0.clone() } else { String::new() };
                lanes.entry(lane).or_default().push(attempt);
            }
            for (lane, attempts) in &lanes {
                for pair in attempts.windows(2) {
                    assert!(pair[0].1 <= pair[1].1, "lane {lane:?} ran {} after {}", pair[1].1, pair[0].1);
                    assert!(pair[0].4 <= pair[1].3, "lane {lane:?} overlapped");
                }
            }
            // Every message is accounted for, once.
            assert_accounted(&summary);
            assert_eq!(summary.failures.len() as u64, summary.failed + summary.rejected);
            // A message that did not complete while a later message of its lane ran is
            // reported with a kind that breaks ordering, and the summary says so.
            let lane_of = |key: &str| if keyed_mode { key.to_owned() } else { String::new() };
            for failure in &summary.failures {
                let later_ran = trace
                    .attempts
                    .iter()
                    .any(|a| lane_of(&a.0) == lane_of(&failure.key) && a.1 > failure.seq);
                if later_ran {
                    assert!(failure.kind.breaks_ordering(), "{failure:?} skipped, its lane went on");
                    assert!(summary.ordering_broken, "{failure:?} broke the order unreported");
                }
            }
            // Every message that did not succeed is listed, once.
            let mut listed: Vec<u64> = summary.failures.iter().map(|f| f.seq).collect();
            listed.dedup();
            assert_eq!(listed.len(), summary.failures.len(), "a message listed twice");
            // Draining with a long grace period loses nothing admitted: the only shutdown
            // failures are messages that arrived after shutdown began (never admitted).
            for failure in summary.failures.iter().filter(|f| f.kind == FailureKind::Shutdown) {
                assert_eq!(failure.attempts, 0, "an admitted message was cut: {failure:?}");
            }
            if matches!(ending, Ending::Close) {
                assert_eq!(summary.received, messages.len() as u64);
                assert_eq!(summary.end, FailureKind::None);
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn many_streams_share_a_pipeline() {
    let recorder = Recorder::new(Duration::from_millis(1));
    let pipeline = keyed(options(KEYED), &recorder);
    let done = Arc::new(AtomicUsize::new(0));
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (pipeline, done) = (pipeline.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let stream = futures::stream::iter(items(&[("a", 0), ("b", 0), ("a", 0)]));
                let summary = pipeline.run(stream.boxed()).await;
                done.fetch_add(summary.succeeded as usize, Ordering::SeqCst);
            })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 12);
}

/// On a multi-threaded runtime (real time; no timing is asserted, only invariants): four
/// streams of 2,000 messages over 20 keys each, with a bounded ordering queue and a queue
/// policy, keep every key in order with no overlap and account for every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_many_threads_keys_stay_in_order_and_every_message_is_counted() {
    #[derive(Default)]
    struct Seen {
        running: HashMap<String, bool>,
        last: HashMap<String, u64>,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = service_fn({
        let seen = Arc::clone(&seen);
        move |m: Message<Item>| {
            let seen = Arc::clone(&seen);
            async move {
                let key = m.key.to_string();
                {
                    let mut s = seen.lock().unwrap();
                    if s.running.insert(key.clone(), true) == Some(true) {
                        s.violations.push(format!("{key} overlapped at {}", m.seq));
                    }
                    let last = s.last.insert(key.clone(), m.seq).unwrap_or(0);
                    if last >= m.seq {
                        s.violations.push(format!("{key}: {} after {last}", m.seq));
                    }
                }
                tokio::task::yield_now().await;
                seen.lock().unwrap().running.insert(key, false);
                Ok::<_, BoxError>(())
            }
        }
    });
    let pipeline = Pipeline::keyed(
        "threads",
        options(
            r#"{ "ordering": { "mode": "keyed_fifo", "capacity": 1000 },
                 "backpressure": { "policy": "queue", "capacity": 4 } }"#,
        ),
        handler,
        |m: &Item| m.0.as_str(),
    )
    .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|run| {
            let list: Vec<Result<Item, tonic::Status>> = (0..2000u32)
                .map(|i| Ok((format!("r{run}-k{}", (i * 7) % 20), 0)))
                .collect();
            spawn_run(&pipeline, futures::stream::iter(list))
        })
        .collect();
    let mut processed = 0;
    for run in runs {
        let summary = run.await.unwrap();
        assert_eq!(summary.received, 2000);
        assert_eq!(
            summary.received,
            summary.succeeded + summary.failed + summary.rejected,
            "{summary:?}"
        );
        assert_eq!(summary.failed, 0);
        assert!(
            summary
                .failures
                .iter()
                .all(|f| f.kind == FailureKind::Ordering)
        );
        processed += summary.succeeded;
    }
    assert!(processed >= 4 * 1000, "most messages ran: {processed}");
    let seen = seen.lock().unwrap();
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
}
