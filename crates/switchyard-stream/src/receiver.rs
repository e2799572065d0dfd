//! The Receiver: reads what the stream has ready in batches, and finds each message's key.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchyard_core::panic_message;

use crate::failure::FailureKind;
use crate::gate::ShutdownWatch;
use crate::run::Run;

/// A key function: one that borrows the key from the message (no copy; a known key's lane
/// is found by it and its name shared), or one that computes it.
pub(crate) enum KeyFn<T> {
    Borrowed(BorrowedKey<T>),
    Computed(ComputedKey<T>),
}

/// A message's key: borrowed from it, or computed.
pub(crate) enum Key<'a> {
    Borrowed(&'a str),
    Computed(Arc<str>),
}

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Computed(key) => key,
        }
    }

    /// As an `Arc<str>`: a computed key shared, a borrowed one copied.
    pub(crate) fn to_arc(&self) -> Arc<str> {
        match self {
            Key::Borrowed(key) => Arc::from(*key),
            Key::Computed(key) => Arc::clone(key),
        }
    }
}

pub(crate) type BorrowedKey<T> = Arc<dyn for<'a> Fn(&'a T) -> &'a str + Send + Sync>;
pub(crate) type ComputedKey<T> = Arc<dyn Fn(&T) -> Arc<str> + Send + Sync>;
/// What stopped [`take_buffered`].
pub(crate) enum Taken {
    /// Nothing more is ready now (or the batch is full, or a shutdown came): read on.
    More,
    /// The stream ended.
    End,
    /// The stream failed.
    Failed(tonic::Status),
}

/// Takes the messages `stream` has ready, up to a batch, into `batch`, in one pass (each poll
/// with a no-op waker: the run loop polls the stream again, with its own, before it waits).
/// Stops before a message past a shutdown, for the run loop to see the shutdown first.
pub(crate) fn take_buffered<S, T>(
    mut stream: Pin<&mut S>,
    batch: &mut Vec<T>,
    shutdown: &ShutdownWatch,
) -> Taken
where
    S: Stream<Item = Result<T, tonic::Status>>,
{
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while batch.len() < BATCH && !shutdown.signalled() {
        match stream.as_mut().poll_next(&mut cx) {
            std::task::Poll::Ready(Some(Ok(item))) => batch.push(item),
            std::task::Poll::Ready(Some(Err(status))) => return Taken::Failed(status),
            std::task::Poll::Ready(None) => return Taken::End,
            std::task::Poll::Pending => return Taken::More,
        }
    }
    Taken::More
}
/// The most buffered messages the receiver takes before it looks at shutdown and finished
/// workers again.
pub(crate) const BATCH: usize = 64;
impl<T> Run<T> {
    /// A message's key, or why it has none (the key function panicked).
    pub(crate) fn key_of<'a>(&self, item: &'a T) -> Result<Key<'a>, String> {
        let found = match &self.pipeline.key {
            None => return Ok(Key::Borrowed("")),
            Some(KeyFn::Borrowed(key_fn)) => {
                catch_unwind(AssertUnwindSafe(|| Key::Borrowed(key_fn(item))))
            }
            Some(KeyFn::Computed(key_fn)) => {
                catch_unwind(AssertUnwindSafe(|| Key::Computed(key_fn(item))))
            }
        };
        found.map_err(|panic| format!("the key function panicked: {}", panic_message(&*panic)))
    }
}

impl<T> Run<T> {
    /// The stream failed with `status`; answers whether that ends it now. A caller that
    /// cancelled (or whose deadline passed) can be delivered no answer, so everything admitted
    /// is cancelled. Otherwise the stream broke (a transport or decoding error): nothing more
    /// arrives, the messages already admitted finish, and the answer carries the stream's own
    /// status.
    pub(crate) fn stream_failed(&self, status: &tonic::Status) -> bool {
        if matches!(
            status.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ) {
            self.terminate(FailureKind::ContextCancelled, status.message().to_owned());
            return true;
        }
        let mut summary = self.summary_mut();
        if summary.end == FailureKind::None {
            summary.end = FailureKind::Internal;
            summary.end_error = Some(format!("the stream failed: {}", status.message()));
            summary.end_code = Some(status.code() as i32);
        }
        false
    }
}
