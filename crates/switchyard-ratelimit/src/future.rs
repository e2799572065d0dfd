//! The response future: the inner call, or an immediately ready rejection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::hash::Hash;
use std::sync::Arc;

use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use tokio::time::{Instant, Sleep};
use tower::Service;
use tower::util::Oneshot;

use crate::error::RateLimited;
use crate::limiter::KeyedLimiter;

pin_project! {
    /// The response future of the rate-limit services: the inner call, or an immediately
    /// ready [`RateLimited`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
        },
        Refused {
            error: Option<RateLimited>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn refused(error: RateLimited) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => Poll::Ready(ready!(future.poll(cx)).map_err(Into::into)),
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}

pin_project! {
    /// The response future of [`KeyedRateLimit`](crate::KeyedRateLimit): the inner call, an
    /// immediately ready [`RateLimited`], or (wait mode) a call waiting for its key's limit
    /// with a clone of the inner service `S`, readied only once the limit admits the call.
    pub struct KeyedResponseFuture<F, S, Req, K>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        S: Service<Req>,
    {
        #[pin]
        kind: KeyedKind<F, S, Req, K>,
    }
}

pin_project! {
    #[project = KeyedKindProj]
    enum KeyedKind<F, S, Req, K>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        S: Service<Req>,
    {
        Decided {
            #[pin]
            future: ResponseFuture<F>,
        },
        // Admitted after waiting: the clone is readied, then called.
        Sent {
            #[pin]
            future: ResponseFuture<Oneshot<S, Req>>,
        },
        // Cold (only over the limit in wait mode): the sleep is boxed, as tokio's `Sleep` is
        // large and `!Unpin`.
        Waiting {
            sleep: Pin<Box<Sleep>>,
            // `None`: `max_wait` is beyond the clock's range, so there is no deadline.
            deadline: Option<Instant>,
            key: K,
            limits: Arc<KeyedLimiter<K>>,
            call: Option<(S, Req)>,
        },
    }
}

impl<F, S: Service<Req>, Req, K: Hash + Eq + Clone> KeyedResponseFuture<F, S, Req, K> {
    pub(crate) fn called(future: F) -> Self {
        Self::decided(ResponseFuture::called(future))
    }

    pub(crate) fn refused(error: RateLimited) -> Self {
        Self::decided(ResponseFuture::refused(error))
    }

    fn decided(future: ResponseFuture<F>) -> Self {
        Self {
            kind: KeyedKind::Decided { future },
        }
    }

    pub(crate) fn waiting(
        until: Instant,
        deadline: Option<Instant>,
        key: K,
        limits: Arc<KeyedLimiter<K>>,
        service: S,
        request: Req,
    ) -> Self {
        Self {
            kind: KeyedKind::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(until)),
                deadline,
                key,
                limits,
                call: Some((service, request)),
            },
        }
    }
}

impl<F, S, Req, K, T, E> Future for KeyedResponseFuture<F, S, Req, K>
where
    S: Service<Req, Future = F, Response = T, Error = E>,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: Hash + Eq + Clone,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.kind.as_mut().project() {
                KeyedKindProj::Decided { future } => return future.poll(cx),
                KeyedKindProj::Sent { future } => return future.poll(cx),
                KeyedKindProj::Waiting {
                    sleep,
                    deadline,
                    key,
                    limits,
                    call,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    match limits.check(key) {
                        Ok(()) => {
                            let (service, request) = call
                                .take()
                                .expect("KeyedResponseFuture polled after completion");
                            limits.metrics.admitted.increment(1);
                            let future = ResponseFuture::called(Oneshot::new(service, request));
                            this.kind.set(KeyedKind::Sent { future });
                            continue;
                        }
                        // Another caller took the cell this one waited for: wait again, within
                        // the same deadline.
                        Err(wait) => match Instant::now().checked_add(wait) {
                            Some(until) if deadline.is_none_or(|d| until <= d) => {
                                sleep.as_mut().reset(until);
                                continue;
                            }
                            _ => ResponseFuture::refused(
                                limits
                                    .metrics
                                    .reject(RateLimited::new(Arc::clone(&limits.name), wait)),
                            ),
                        },
                    }
                }
            };
            this.kind.set(KeyedKind::Decided { future: next });
        }
    }
}

impl<F, S: Service<Req>, Req, K: Hash + Eq + Clone> std::fmt::Debug
    for KeyedResponseFuture<F, S, Req, K>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            KeyedKind::Decided { .. } | KeyedKind::Sent { .. } => "decided",
            KeyedKind::Waiting { .. } => "waiting",
        };
        f.debug_struct("KeyedResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
