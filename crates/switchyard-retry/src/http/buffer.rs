//! The service that reads a request body into a [`ReplayBody`] before the first attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use tower::Service;
use tower::util::Oneshot;

use super::HttpReplay;
use super::body::ReplayBody;

/// Reads each request's body into a [`ReplayBody`] (up to `max_body_bytes`) before handing the
/// request on, so that the retry inside can send it again. Built by
/// [`HttpRetryLayer`](crate::http::HttpRetryLayer).
///
/// A request that cannot be retried anyway (its method is not retried, or its body announces
/// more than the limit) is passed on at once, streaming. A body that turns out larger than the
/// limit while being read is passed on with the bytes read so far followed by the rest, so
/// nothing is lost; its call is then not retried.
#[derive(Clone)]
pub struct BufferBody<S> {
    inner: S,
    // `None`: nothing is retried, so nothing is buffered.
    replay: Option<HttpReplay>,
    max_body_bytes: usize,
    // Whether to wait for a body's frames, or keep only those it yields at once.
    wait: bool,
}

impl<S> BufferBody<S> {
    pub(crate) fn new(
        inner: S,
        replay: Option<HttpReplay>,
        max_body_bytes: usize,
        wait: bool,
    ) -> Self {
        Self {
            inner,
            replay,
            max_body_bytes,
            wait,
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
}

impl<S: fmt::Debug> fmt::Debug for BufferBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferBody")
            .field("inner", &self.inner)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for BufferBody<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferBodyFuture<S::Future, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let replay = if body.is_end_stream() {
            ReplayBody::buffered(Vec::new(), None)
        } else if !self
            .replay
            .as_ref()
            .is_some_and(|replay| replay.allows(&parts.method, &parts.extensions))
            || body.size_hint().lower() > self.max_body_bytes as u64
        {
            ReplayBody::streaming(Vec::new(), body)
        } else {
            // Read the body first, then ready and call a clone: holding the readied service
            // while a client uploads would hold what its readiness reserved (a `Buffer` slot,
            // a permit). This one stays readied for the next call.
            return BufferBodyFuture {
                state: State::Reading {
                    service: Some(self.inner.clone()),
                    parts: Some(parts),
                    body: Some(body),
                    chunks: Vec::new(),
                    len: 0,
                    max: self.max_body_bytes,
                    wait: self.wait,
                    trailers: None,
                },
            };
        };
        let future = self.inner.call(Request::from_parts(parts, replay));
        BufferBodyFuture {
            state: State::Called { future },
        }
    }
}

pin_project! {
    /// The response future of [`BufferBody`]: reading the body, then the inner call.
    pub struct BufferBodyFuture<F, S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<F, S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        Reading {
            service: Option<S>,
            parts: Option<Parts>,
            body: Option<B>,
            chunks: Vec<Bytes>,
            len: usize,
            max: usize,
            wait: bool,
            trailers: Option<http::HeaderMap>,
        },
        Called {
            #[pin]
            future: F,
        },
        Sent {
            #[pin]
            future: Oneshot<S, Request<ReplayBody<B>>>,
        },
    }
}

impl<F, S, B, T, E> Future for BufferBodyFuture<F, S, B>
where
    S: Service<Request<ReplayBody<B>>, Future = F, Response = T, Error = E>,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let future = match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    return Poll::Ready(ready!(future.poll(cx)).map_err(Into::into));
                }
                StateProj::Sent { future } => {
                    return Poll::Ready(ready!(future.poll(cx)).map_err(Into::into));
                }
                StateProj::Reading {
                    service,
                    parts,
                    body,
                    chunks,
                    len,
                    max,
                    wait,
                    trailers,
                } => {
                    let reading = body
                        .as_mut()
                        .expect("BufferBodyFuture polled after completion");
                    let replay = match Pin::new(reading).poll_frame(cx) {
                        Poll::Pending if *wait => return Poll::Pending,
                        // The body makes the call wait (a stream still being written): send
                        // what was read, then the rest as it comes; its call is not retried.
                        Poll::Pending => ReplayBody::streaming(
                            std::mem::take(chunks),
                            body.take().expect("read above"),
                        ),
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => {
                                *len = len.saturating_add(data.len());
                                if !data.is_empty() {
                                    chunks.push(data);
                                }
                                if *len <= *max {
                                    continue;
                                }
                                // Too large to keep: send what was read, then the rest.
                                ReplayBody::streaming(
                                    std::mem::take(chunks),
                                    body.take().expect("read above"),
                                )
                            }
                            Err(frame) => {
                                if let Ok(received) = frame.into_trailers() {
                                    *trailers = Some(received);
                                }
                                continue;
                            }
                        },
                        Poll::Ready(Some(Err(error))) => {
                            // The request cannot be sent: finish here, dropping the body.
                            body.take();
                            return Poll::Ready(Err(error.into()));
                        }
                        Poll::Ready(None) => {
                            body.take();
                            ReplayBody::buffered(std::mem::take(chunks), trailers.take())
                        }
                    };
                    let request =
                        Request::from_parts(parts.take().expect("set until called"), replay);
                    Oneshot::new(service.take().expect("set until sent"), request)
                }
            };
            this.state.set(State::Sent { future });
        }
    }
}

impl<F, S: Service<Request<ReplayBody<B>>>, B> fmt::Debug for BufferBodyFuture<F, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reading { .. } => "reading",
            State::Called { .. } | State::Sent { .. } => "called",
        };
        f.debug_struct("BufferBodyFuture")
            .field("state", &state)
            .finish()
    }
}
