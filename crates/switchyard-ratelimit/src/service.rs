//! The rate-limit service: the limit's decision in `poll_ready`, the call in `call`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use switchyard_core::BoxError;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::config::RateLimitMode;
use crate::error::RateLimited;
use crate::future::ResponseFuture;
use crate::limiter::Limiter;

/// Where an instance is between `poll_ready` and `call`.
enum Decision {
    Undecided,
    /// A call's worth of the limit is taken; `call` may go through.
    Admitted,
    /// `call` answers with this error without calling the inner service.
    Refused(RateLimited),
    /// Wait mode: sleeping until the limit would admit a call, at the latest by `deadline`.
    Waiting {
        sleep: Pin<Box<Sleep>>,
        deadline: Instant,
    },
}

/// A rate limit around a service. Built by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// Unlike `tower::limit::RateLimit`, it is `Clone`, and clones share one limit: an axum router
/// that clones the service per request still admits the quota, not a multiple of it. Clones
/// share the limit but not readiness.
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
    decision: Decision,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, limiter: Arc<Limiter>) -> Self {
        Self {
            inner,
            limiter,
            decision: Decision::Undecided,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Decides, waiting (in wait mode) while the limit would admit the call within its wait.
    fn decide(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.decision {
                Decision::Admitted | Decision::Refused(_) => return Poll::Ready(()),
                Decision::Waiting { sleep, .. } => {
                    ready!(sleep.as_mut().poll(cx));
                    let deadline = match std::mem::replace(&mut self.decision, Decision::Undecided)
                    {
                        Decision::Waiting { deadline, .. } => Some(deadline),
                        _ => None,
                    };
                    self.check(deadline);
                }
                Decision::Undecided => self.check(None),
            }
        }
    }

    /// Takes a call's worth of the limit, or settles how to wait or refuse.
    fn check(&mut self, deadline: Option<Instant>) {
        let limiter = &*self.limiter;
        self.decision = match limiter.check() {
            Ok(()) => Decision::Admitted,
            Err(wait) => match limiter.mode {
                RateLimitMode::Reject => {
                    Decision::Refused(RateLimited::new(Arc::clone(&limiter.name), wait))
                }
                RateLimitMode::Wait { max_wait } => {
                    let now = Instant::now();
                    // A `max_wait` beyond the clock's range means no deadline at all.
                    let deadline = deadline.or_else(|| now.checked_add(max_wait));
                    match now.checked_add(wait) {
                        Some(until) if deadline.is_none_or(|d| until <= d) => Decision::Waiting {
                            sleep: Box::pin(tokio::time::sleep_until(until)),
                            deadline: deadline.unwrap_or(until),
                        },
                        _ => Decision::Refused(RateLimited::new(Arc::clone(&limiter.name), wait)),
                    }
                }
            },
        };
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Decision::Refused(_) = self.decision {
            // Decided afresh at every `poll_ready`, as `tower::load_shed` does.
            self.decision = Decision::Undecided;
        }
        ready!(self.decide(cx));
        if let Decision::Refused(_) = self.decision {
            return Poll::Ready(Ok(()));
        }
        // Admitted. The call's worth of the limit stays taken even if the inner service
        // turns out dead: GCRA cannot give a cell back.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match std::mem::replace(&mut self.decision, Decision::Undecided) {
            Decision::Admitted => {
                self.limiter.metrics.admitted.increment(1);
                ResponseFuture::called(self.inner.call(req))
            }
            Decision::Refused(refused) => {
                ResponseFuture::refused(self.limiter.metrics.reject(refused))
            }
            Decision::Undecided | Decision::Waiting { .. } => {
                panic!("poll_ready must be called first")
            }
        }
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        // Shares the limit; starts undecided, as a decision belongs to the instance that made it.
        Self::new(self.inner.clone(), Arc::clone(&self.limiter))
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limit", &self.limiter.name)
            .finish_non_exhaustive()
    }
}
