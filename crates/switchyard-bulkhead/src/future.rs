//! The response future: holds the bulkhead slot until the inner future resolves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use tokio::time::Instant;

use crate::admission::Permit;
use crate::error::BulkheadFull;
use crate::signal::{NoSignal, SignalResponse};

pin_project! {
    /// The response future of [`Bulkhead`](crate::Bulkhead): the inner call holding its slot,
    /// or an immediately ready [`BulkheadFull`]. `M` marks responses admitted over capacity.
    #[derive(Debug)]
    pub struct ResponseFuture<F, M = NoSignal> {
        #[pin]
        kind: Kind<F, M>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, M> {
        Called {
            #[pin]
            future: F,
            // Released as soon as the inner future resolves, or when this future is dropped.
            permit: Option<Permit>,
            // Set when the bulkhead adapts its limit: the call is timed.
            start: Option<Instant>,
            signal: M,
        },
        Refused {
            error: Option<BulkheadFull>,
        },
    }
}

impl<F, M> ResponseFuture<F, M> {
    pub(crate) fn called(future: F, permit: Permit, signal: M) -> Self {
        let start = permit.is_adaptive().then(Instant::now);
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                start,
                signal,
            },
        }
    }

    pub(crate) fn refused(error: BulkheadFull) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, M, T, E> Future for ResponseFuture<F, M>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    M: SignalResponse<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                start,
                signal,
            } => {
                let mut result = ready!(future.poll(cx));
                if let Some(held) = permit.as_ref() {
                    if let Some(start) = *start {
                        held.record(result.is_ok(), start.elapsed());
                    }
                    if let (true, Ok(response)) = (held.is_over_capacity(), result.as_mut()) {
                        signal.signal(held.bulkhead(), response);
                    }
                }
                drop(permit.take());
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
