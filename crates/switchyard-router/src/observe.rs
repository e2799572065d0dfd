//! Call observation: each call's outcome and duration under its route's labels.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use switchyard_core::sync::lock;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use crate::status::unix_now;
use crate::transport::{CatchPanic, CatchPanicFuture, RouteService};

/// Per-route metric handles, made once per build so a call touches no registry.
pub(crate) struct RouteMetrics {
    pub(crate) service: Arc<str>,
    pub(crate) strategy: Arc<str>,
    pub(crate) ok: Counter,
    pub(crate) duration: Histogram,
    /// The last failed call's error and its time (unix seconds); written on failures only.
    pub(crate) last_error: Mutex<Option<(String, u64)>>,
}

impl RouteMetrics {
    pub(crate) fn new(service: &Arc<str>, strategy: &Arc<str>) -> Self {
        let labels = [
            ("service", service.to_string()),
            ("strategy", strategy.to_string()),
        ];
        Self {
            service: Arc::clone(service),
            strategy: Arc::clone(strategy),
            ok: metrics::counter!(
                "switchyard_router_calls_total",
                &[&labels[..], &[("outcome", "ok".to_owned())]].concat()
            ),
            duration: metrics::histogram!("switchyard_router_call_duration_seconds", &labels),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn last_error(&self) -> Option<(String, u64)> {
        lock(&self.last_error).clone()
    }

    pub(crate) fn failed(&self, outcome: &'static str) {
        metrics::counter!(
            "switchyard_router_calls_total",
            "service" => self.service.to_string(),
            "strategy" => self.strategy.to_string(),
            "outcome" => outcome,
        )
        .increment(1);
    }

    pub(crate) fn record(&self, result: Result<(), &BoxError>, started: quanta::Instant) {
        self.duration
            .record(wall_clock().duration_since(started).as_secs_f64());
        match result {
            Ok(()) => self.ok.increment(1),
            Err(e) => {
                self.failed(outcome(e));
                *lock(&self.last_error) = Some((e.to_string(), unix_now()));
            }
        }
    }
}

/// The clock of call-duration metrics: quanta's (the TSC where it is reliable), which reads in
/// a few nanoseconds where `clock_gettime` costs tens, twice per call. It decides nothing, so
/// paused-time tests do not need to control it.
pub(crate) fn wall_clock() -> quanta::Instant {
    quanta::Instant::now()
}

/// A failed call's `outcome` label: its rejection kind, or `error`.
pub(crate) fn outcome(error: &BoxError) -> &'static str {
    switchyard_core::find_rejection(&**error).map_or("error", |r| r.kind().as_str())
}

pub(crate) fn observed<Req, Res>(
    service: RouteService<Req, Res>,
    metrics: &Arc<RouteMetrics>,
) -> RouteService<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    BoxCloneSyncService::new(Observe::new(service, metrics))
}

/// Records each call's outcome and duration under the route's labels. The service it wraps
/// has its panics caught by [`CatchPanic`] (the router's one place for that), so a panic is
/// recorded as the failed call it becomes.
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: CatchPanic<S>,
    metrics: Arc<RouteMetrics>,
}

impl<S> Observe<S> {
    /// Observes `inner` under the labels of `metrics`.
    pub(crate) fn new(inner: S, metrics: &Arc<RouteMetrics>) -> Self {
        Self {
            inner: CatchPanic::new(inner, Arc::clone(&metrics.service)),
            metrics: Arc::clone(metrics),
        }
    }
}

impl<S, Req> Service<Req> for Observe<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ObserveFuture<CatchPanicFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let started = wall_clock();
        ObserveFuture {
            future: self.inner.call(req),
            metrics: Arc::clone(&self.metrics),
            started,
        }
    }
}

pin_project! {
    /// The response future of [`Observe`]: records the outcome when the call ends.
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        future: F,
        metrics: Arc<RouteMetrics>,
        started: quanta::Instant,
    }
}

impl<F, T> Future for ObserveFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        this.metrics
            .record(result.as_ref().map(|_| ()), *this.started);
        Poll::Ready(result)
    }
}
