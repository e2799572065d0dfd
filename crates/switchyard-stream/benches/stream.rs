//! Keyed-FIFO throughput against a bare `tokio::sync::mpsc` pipeline doing the same work (a
//! channel and a task per key, the hand-rolled way), and the cost of each backpressure
//! policy. Each iteration runs one stream of 10,000 messages over 100 keys to its end on a
//! current-thread runtime; the work per message is one `yield_now` and a counter bump (so
//! keys interleave, as they do when a handler awaits anything).
//!
//! `cargo bench -p switchyard-stream --bench stream`; figures in docs/benchmarks.md.
//!
//! On a noisy machine, `STREAM_INTERLEAVED=400 cargo bench -p switchyard-stream --bench
//! stream` instead runs the bare pipeline and keyed FIFO alternately, 400 times each, and
//! prints the fastest and the median of each and their ratios: both sides see the same noise,
//! and the fastest run is the one the noise touched least. It runs twice: with the near-zero
//! work, then with a 1 KiB hash of work per message on both sides.

#![allow(clippy::disallowed_methods)] // a bench measures wall-clock time; nothing here decides on it

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group};
use switchyard_stream::{Message, Pipeline, StreamConfig};
use tokio::sync::mpsc;
use tower::{BoxError, service_fn};

const MESSAGES: u64 = 10_000;
const KEYS: u64 = 100;

/// A message: its key (a string field, as an account name is) and a payload.
type Item = (String, u64);

fn items() -> Vec<Result<Item, tonic::Status>> {
    (0..MESSAGES)
        .map(|i| Ok((format!("account-{}", (i * 7919) % KEYS), i)))
        .collect()
}

/// Extra work per message in the interleaved mode's second part: hashing this many bytes
/// (0: none), the same on both sides.
static HASHED: AtomicUsize = AtomicUsize::new(0);

async fn work(done: &AtomicU64) {
    tokio::task::yield_now().await;
    let hashed = HASHED.load(Ordering::Relaxed);
    if hashed > 0 {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hasher::write(&mut hasher, &PAYLOAD[..hashed]);
        std::hint::black_box(std::hash::Hasher::finish(&hasher));
    }
    done.fetch_add(1, Ordering::Relaxed);
}

static PAYLOAD: [u8; 1024] = [7; 1024];

/// What both sides count their work on (a static, so neither pays for sharing it).
static DONE: AtomicU64 = AtomicU64::new(0);

fn pipeline(options: &str) -> Pipeline<Item> {
    let handler = service_fn(|_: Message<Item>| async {
        work(&DONE).await;
        Ok::<_, BoxError>(())
    });
    let options = StreamConfig::from_json(options).expect("options");
    Pipeline::keyed("bench", options, handler, |m: &Item| m.0.as_str()).expect("pipeline")
}

/// The hand-rolled equivalent: a dispatcher that sends each message to its key's channel,
/// starting a task per key that handles its messages in order.
async fn bare_mpsc() {
    let mut lanes: HashMap<String, mpsc::UnboundedSender<Item>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for item in items() {
        let item = item.expect("ok");
        if let Some(lane) = lanes.get(&item.0) {
            lane.send(item).expect("lane open");
            continue;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        tasks.spawn(async move {
            while let Some(item) = rx.recv().await {
                std::hint::black_box(&item);
                work(&DONE).await;
            }
        });
        lanes.insert(item.0.clone(), tx.clone());
        tx.send(item).expect("lane open");
    }
    drop(lanes);
    while tasks.join_next().await.is_some() {}
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("stream/10k-messages-100-keys");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(20);
    group.bench_function("bare mpsc (channel + task per key)", |b| {
        b.to_async(&rt).iter(bare_mpsc);
    });
    let cases = [
        (
            "keyed-fifo, unlimited",
            r#"{ "ordering": { "mode": "keyed_fifo" } }"#,
        ),
        (
            "keyed-fifo, queue (16)",
            r#"{ "ordering": { "mode": "keyed_fifo" }, "backpressure": { "policy": "queue", "capacity": 16 } }"#,
        ),
        (
            "keyed-fifo, hard_reject (16)",
            r#"{ "ordering": { "mode": "keyed_fifo" }, "backpressure": { "policy": "hard_reject", "capacity": 16 } }"#,
        ),
        (
            "keyed-fifo, soft_allow (16)",
            r#"{ "ordering": { "mode": "keyed_fifo" }, "backpressure": { "policy": "soft_allow", "capacity": 16 } }"#,
        ),
        (
            "keyed-fifo, soft_allow_with_signal (16)",
            r#"{ "ordering": { "mode": "keyed_fifo" }, "backpressure": { "policy": "soft_allow_with_signal", "capacity": 16 } }"#,
        ),
    ];
    for (name, options) in cases {
        let pipeline = pipeline(options);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let pipeline = pipeline.clone();
                async move {
                    let summary = pipeline.run(futures::stream::iter(items())).await;
                    assert_eq!(summary.received, MESSAGES);
                    std::hint::black_box(summary);
                }
            });
        });
    }
    group.finish();
}

/// Bare and keyed FIFO alternately, `rounds` times each: the fastest and median runs; with
/// the near-zero work, then with a 1 KiB hash per message (a handler that does something).
fn interleaved(rounds: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let pipeline = pipeline(r#"{ "ordering": { "mode": "keyed_fifo" } }"#);
    for hashed in [0, PAYLOAD.len()] {
        HASHED.store(hashed, Ordering::Relaxed);
        compare(&rt, &pipeline, rounds, hashed);
    }
}

fn compare(rt: &tokio::runtime::Runtime, pipeline: &Pipeline<Item>, rounds: usize, hashed: usize) {
    let (mut bare, mut keyed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        rt.block_on(bare_mpsc());
        bare.push(started.elapsed());
        let started = std::time::Instant::now();
        let summary = rt.block_on(pipeline.run(futures::stream::iter(items())));
        keyed.push(started.elapsed());
        assert_eq!(summary.succeeded, MESSAGES);
    }
    bare.sort();
    keyed.sort();
    let (fastest, median) = (0, rounds / 2);
    println!(
        "10k messages, 100 keys, {hashed} bytes hashed per message, {rounds} rounds: bare mpsc {:?} fastest, {:?} median; \
         keyed-fifo {:?} fastest, {:?} median; keyed-fifo throughput × bare: {:.2} fastest, \
         {:.2} median",
        bare[fastest],
        bare[median],
        keyed[fastest],
        keyed[median],
        bare[fastest].as_secs_f64() / keyed[fastest].as_secs_f64(),
        bare[median].as_secs_f64() / keyed[median].as_secs_f64(),
    );
}

criterion_group!(stream, benches);

fn main() {
    match std::env::var("STREAM_INTERLEAVED") {
        Ok(rounds) => interleaved(
            rounds
                .parse()
                .expect("STREAM_INTERLEAVED: a number of rounds"),
        ),
        Err(_) => {
            stream();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
