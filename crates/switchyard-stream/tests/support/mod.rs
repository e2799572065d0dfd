//! Shared by the pipeline tests: a recording handler, message lists, hand-fed streams.

#![allow(dead_code)] // each test file uses its own part of the helpers

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_stream::{FailureKind, Message, Pipeline, StreamConfig, Summary};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{BoxError, service_fn};

/// A message: its key, and how many of its attempts fail before one succeeds (`u32::MAX`:
/// all fail; `PANIC`: the handler panics).
pub(crate) type Item = (String, u32);
pub(crate) const PANIC: u32 = u32::MAX - 1;

/// What the handler saw: each attempt's (key, seq, attempt, start, end), and the highest
/// concurrency overall and per key.
/// One attempt: key, seq, attempt, start, end.
pub(crate) type Attempt = (String, u64, u32, Duration, Duration);

#[derive(Default)]
pub(crate) struct Trace {
    pub attempts: Vec<Attempt>,
    pub running: HashMap<String, usize>,
    pub now_running: usize,
    pub max_running: usize,
    pub max_per_key: usize,
}

#[derive(Clone)]
pub(crate) struct Recorder {
    pub trace: Arc<Mutex<Trace>>,
    pub work: Duration,
    pub epoch: Instant,
}

impl Recorder {
    pub(crate) fn new(work: Duration) -> Self {
        Self {
            trace: Arc::default(),
            work,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn handler(
        &self,
    ) -> impl tower::Service<Message<Item>, Response = (), Error = BoxError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static {
        let this = self.clone();
        service_fn(move |m: Message<Item>| {
            let this = this.clone();
            async move {
                let key = m.key.to_string();
                let start = this.epoch.elapsed();
                {
                    let mut t = this.trace.lock().unwrap();
                    let per_key = t.running.entry(key.clone()).or_default();
                    *per_key += 1;
                    let per_key = *per_key;
                    t.max_per_key = t.max_per_key.max(per_key);
                    t.now_running += 1;
                    t.max_running = t.max_running.max(t.now_running);
                }
                // Released whatever happens next (a failure, a panic, a cancellation).
                let _done = Done(Arc::clone(&this.trace), key.clone());
                if !this.work.is_zero() {
                    tokio::time::sleep(this.work).await;
                }
                let end = this.epoch.elapsed();
                this.trace
                    .lock()
                    .unwrap()
                    .attempts
                    .push((key, m.seq, m.attempt, start, end));
                let failing = m.item.1;
                if failing == PANIC {
                    panic!("handler bug on message {}", m.seq);
                }
                if m.attempt <= failing {
                    return Err::<(), BoxError>(format!("attempt {} failed", m.attempt).into());
                }
                Ok(())
            }
        })
    }

    pub(crate) fn seqs_of(&self, key: &str) -> Vec<u64> {
        let t = self.trace.lock().unwrap();
        let mut seqs: Vec<u64> = t
            .attempts
            .iter()
            .filter(|a| a.0 == key && a.2 == 1)
            .map(|a| a.1)
            .collect();
        seqs.dedup();
        seqs
    }
}

pub(crate) struct Done(pub Arc<Mutex<Trace>>, pub String);

impl Drop for Done {
    fn drop(&mut self) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.now_running -= 1;
        *t.running.get_mut(&self.1).expect("started") -= 1;
    }
}

pub(crate) fn options(json: &str) -> StreamConfig {
    StreamConfig::from_json(json).unwrap()
}

pub(crate) fn items(list: &[(&str, u32)]) -> Vec<Result<Item, tonic::Status>> {
    list.iter()
        .map(|(k, f)| Ok(((*k).to_owned(), *f)))
        .collect()
}

pub(crate) fn keyed(options: StreamConfig, recorder: &Recorder) -> Pipeline<Item> {
    Pipeline::keyed("test", options, recorder.handler(), |m: &Item| m.0.as_str()).unwrap()
}

pub(crate) async fn run_all(pipeline: &Pipeline<Item>, list: &[(&str, u32)]) -> Summary {
    pipeline.run(futures::stream::iter(items(list))).await
}

pub(crate) fn kinds(summary: &Summary) -> Vec<(u64, FailureKind)> {
    summary.failures.iter().map(|f| (f.seq, f.kind)).collect()
}

/// Runs `stream` through `pipeline` in a task of its own.
pub(crate) fn spawn_run(
    pipeline: &Pipeline<Item>,
    stream: impl futures::Stream<Item = Result<Item, tonic::Status>> + Send + 'static,
) -> tokio::task::JoinHandle<Summary> {
    let pipeline = pipeline.clone();
    tokio::spawn(async move { pipeline.run(stream).await })
}

pub(crate) const KEYED: &str = r#"{ "ordering": { "mode": "keyed_fifo" } }"#;

/// Every message read is accounted for, once: succeeded, failed or rejected.
pub(crate) fn assert_accounted(summary: &Summary) {
    assert_eq!(
        summary.received,
        summary.succeeded + summary.failed + summary.rejected,
        "{summary:?}"
    );
}

/// A stream already holding one message (that succeeds) per key in `keys`, left open.
pub(crate) fn feed(
    keys: &[&str],
) -> (
    mpsc::UnboundedSender<Result<Item, tonic::Status>>,
    impl futures::Stream<Item = Result<Item, tonic::Status>> + Send,
) {
    let (tx, stream) = channel();
    for key in keys {
        tx.send(Ok(((*key).to_owned(), 0))).unwrap();
    }
    (tx, stream)
}

/// A stream the test feeds by hand, left open until the sender is dropped.
pub(crate) fn channel() -> (
    mpsc::UnboundedSender<Result<Item, tonic::Status>>,
    impl futures::Stream<Item = Result<Item, tonic::Status>> + Send,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio_stream_like(rx))
}

pub(crate) fn tokio_stream_like(
    mut rx: mpsc::UnboundedReceiver<Result<Item, tonic::Status>>,
) -> impl futures::Stream<Item = Result<Item, tonic::Status>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
