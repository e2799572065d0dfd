//! A request body that can be sent again: buffered when small enough, streamed otherwise.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A request body kept for replay when it fit in `max_body_bytes`, or streamed as it comes
/// (its first bytes, read while finding out, then the rest) when it did not.
///
/// Built by [`BufferBody`](crate::http::BufferBody); a buffered body copies cheaply
/// (reference-counted chunks) with [`try_clone`](Self::try_clone).
#[derive(Debug)]
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

#[derive(Debug)]
enum Kind<B> {
    Buffered {
        chunks: Vec<Bytes>,
        next: usize,
        trailers: Option<HeaderMap>,
        trailers_sent: bool,
    },
    Streaming {
        read: VecDeque<Bytes>,
        rest: B,
    },
}

impl<B> ReplayBody<B> {
    /// A replayable body of `chunks` and optional `trailers`.
    pub(crate) fn buffered(chunks: Vec<Bytes>, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Buffered {
                chunks,
                next: 0,
                trailers,
                trailers_sent: false,
            },
        }
    }

    /// A body that streams `rest` after the chunks already `read` from it: not replayable.
    pub(crate) fn streaming(read: Vec<Bytes>, rest: B) -> Self {
        Self {
            kind: Kind::Streaming {
                read: read.into(),
                rest,
            },
        }
    }

    /// A replayable body holding `bytes`.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self::buffered(vec![bytes.into()], None)
    }

    /// Whether the body was kept, so that [`try_clone`](Self::try_clone) gives a copy.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }

    /// A fresh copy from the start, if the body was kept.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Buffered {
                chunks, trailers, ..
            } => Some(Self::buffered(chunks.clone(), trailers.clone())),
            Kind::Streaming { .. } => None,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Buffered {
                chunks,
                next,
                trailers,
                trailers_sent,
            } => Poll::Ready(if let Some(chunk) = chunks.get(*next) {
                *next += 1;
                Some(Ok(Frame::data(chunk.clone())))
            } else if *trailers_sent {
                None
            } else {
                // Cloned, not taken: a copy made after this body was read still has them.
                *trailers_sent = true;
                trailers.clone().map(|t| Ok(Frame::trailers(t)))
            }),
            Kind::Streaming { read, rest } => match read.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered {
                chunks,
                next,
                trailers,
                trailers_sent,
            } => *next >= chunks.len() && (trailers.is_none() || *trailers_sent),
            Kind::Streaming { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { chunks, next, .. } => {
                let left: usize = chunks.iter().skip(*next).map(Bytes::len).sum();
                SizeHint::with_exact(left as u64)
            }
            Kind::Streaming { read, rest } => {
                let read: u64 = read.iter().map(|c| c.len() as u64).sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
        }
    }
}
