//! Test helpers shared by the switchyard crates (feature `test-util`): not part of the
//! stable API.
//!
//! [`Recorded`] reads a `metrics_util` debugging recorder, so that every crate asserts its
//! metric names and values the same way; [`Backend`] is a scriptable `Service<u32>`, and
//! [`ms`], [`poll_once`] and [`is_send_sync_static`] are the helpers every crate's tests
//! would otherwise write again.

mod backend;

pub use backend::{BACKEND_FAILED, BACKEND_NOT_READY, Backend, is_send_sync_static, ms, poll_once};

use metrics_util::debugging::{DebugValue, Snapshotter};

/// One snapshot of a debugging recorder.
///
/// Taking it drains the recorder: counters count again from zero and gauges read zero (so
/// an increment-only gauge reads the change since), so take one snapshot per point of
/// interest and read it as often as needed.
#[derive(Debug)]
pub struct Recorded(Vec<Metric>);

/// A metric's name, its labels sorted, and its value.
type Metric = (String, Vec<(String, String)>, DebugValue);

impl Recorded {
    /// Takes a snapshot (and so drains the recorder).
    pub fn take(snapshotter: &Snapshotter) -> Self {
        let metrics = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort_unstable();
                (key.name().to_owned(), labels, value)
            })
            .collect();
        Self(metrics)
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort_unstable();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, value)| value)
    }

    /// Whether any metric of this name was registered, whatever its labels.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    /// Counter `name{labels}`, counted since the previous snapshot; `None` if never
    /// registered.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.find(name, labels)? {
            DebugValue::Counter(n) => Some(*n),
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    /// Gauge `name{labels}`; `None` if never registered.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels)? {
            DebugValue::Gauge(v) => Some(v.0),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    /// Histogram `name{labels}`'s values since the previous snapshot; `None` if never
    /// registered.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Vec<f64>> {
        match self.find(name, labels)? {
            DebugValue::Histogram(values) => Some(values.iter().map(|v| v.0).collect()),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

/// Drives `service` through `iters` calls, each `poll_ready` then `call(i)`, keeping the
/// answers from being optimised away: the loop every switchyard bench measures, so that their
/// figures compare like with like.
///
/// # Panics
///
/// If the service fails to become ready or a call fails: a bench measures the success path.
pub async fn drive<S>(service: &mut S, iters: u64)
where
    S: tower::Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .expect("ready");
        let out = service.call(std::hint::black_box(i)).await.expect("call");
        std::hint::black_box(out);
    }
}
