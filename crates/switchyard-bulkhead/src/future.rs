//! The response future: holds the bulkhead slot until the inner future resolves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use tokio::time::Instant;

use crate::admission::Permit;
use crate::error::BulkheadFull;

pin_project! {
    /// The response future of [`Bulkhead`](crate::Bulkhead): the inner call holding its slot,
    /// or an immediately ready [`BulkheadFull`].
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
            // Released as soon as the inner future resolves, or when this future is dropped.
            permit: Option<Permit>,
            // Set when the bulkhead adapts its limit: the call is timed.
            start: Option<Instant>,
        },
        Refused {
            error: Option<BulkheadFull>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F, permit: Permit) -> Self {
        let start = permit.is_adaptive().then(Instant::now);
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                start,
            },
        }
    }

    pub(crate) fn refused(error: BulkheadFull) -> Self {
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
            KindProj::Called {
                future,
                permit,
                start,
            } => {
                let result = ready!(future.poll(cx));
                if let (Some(permit), Some(start)) = (permit.as_ref(), *start) {
                    permit.record(result.is_ok(), start.elapsed());
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
