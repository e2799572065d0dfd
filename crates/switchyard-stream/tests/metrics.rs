//! The metrics a pipeline records, read from a `metrics_util` debugging recorder installed
//! while the pipeline is built and run.

use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use switchyard_core::test_util::Recorded;
use switchyard_stream::{Message, Pipeline, StreamConfig};
use tower::{BoxError, service_fn};

type Item = (String, u32);

#[test]
fn admissions_rejections_retries_and_gauges_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let recorded = metrics::with_local_recorder(&recorder, || {
        // Message 1 fails its first attempt; each message takes 10 ms.
        let handler = service_fn(|m: Message<Item>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if m.seq == 1 && m.attempt == 1 {
                return Err::<(), BoxError>("first try fails".into());
            }
            Ok(())
        });
        let options = StreamConfig::from_json(
            r#"{ "ordering": { "mode": "keyed_fifo" },
                 "backpressure": { "policy": "hard_reject", "capacity": 1 },
                 "retry": { "max_attempts": 2 } }"#,
        )
        .unwrap();
        let pipeline =
            Pipeline::keyed("ledger", options, handler, |m: &Item| m.0.as_str()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let summary = runtime.block_on(async {
            // a runs (and retries); b's turn comes while a holds the only slot: rejected;
            // a's second message waits behind the first, then runs.
            let items = [("a", 0), ("b", 0), ("a", 0)]
                .map(|(k, n)| Ok::<_, tonic::Status>((k.to_owned(), n)));
            pipeline.run(futures::stream::iter(items)).await
        });
        assert_eq!(
            (summary.succeeded, summary.rejected, summary.retries),
            (2, 1, 1)
        );
        Recorded::take(&snapshotter)
    });

    let ledger = [("pipeline", "ledger")];
    assert_eq!(
        recorded.counter("switchyard_stream_admitted_total", &ledger),
        Some(2)
    );
    assert_eq!(
        recorded.counter("switchyard_stream_retries_total", &ledger),
        Some(1)
    );
    assert_eq!(
        recorded.counter(
            "switchyard_stream_messages_failed_total",
            &[
                ("pipeline", "ledger"),
                ("outcome", "rejected"),
                ("kind", "backpressure"),
                ("policy", "hard_reject"),
            ],
        ),
        Some(1)
    );
    assert_eq!(
        recorded.gauge("switchyard_stream_in_flight", &ledger),
        Some(0.0)
    );
    assert_eq!(
        recorded.gauge("switchyard_stream_queued", &ledger),
        Some(0.0)
    );
    assert_eq!(
        recorded.histogram("switchyard_stream_key_queue_depth", &ledger),
        Some(vec![2.0]),
        "a's second message joined a's queue, whose first message had not started yet"
    );
}
