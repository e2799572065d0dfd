//! Marking the responses of calls admitted beyond the limit.
//!
//! A soft-allow bulkhead lets calls through over its limit; a caller (or a proxy in front of
//! it) may want to know, per response, that this one ran under pressure — to shed optional
//! work, lower a client's rate, or add a header. The bulkhead is generic over its response
//! type, so what "marking" means is a [`SignalResponse`] chosen on the layer: nothing by default
//! ([`NoSignal`], a zero-sized type the compiler removes), or an [`OverCapacity`] extension on
//! an `http::Response` ([`OverCapacityExtension`]).

use std::sync::Arc;

/// What a bulkhead does to the response of a call it admitted beyond its limit.
///
/// Called once per such call, on success only (an error has nowhere to carry a mark), before
/// the response leaves the bulkhead's future.
pub trait SignalResponse<Res>: Clone {
    /// Marks `response` as produced by a call admitted over capacity by `bulkhead`.
    fn signal(&self, bulkhead: &Arc<str>, response: &mut Res);
}

/// Leaves responses untouched (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoSignal;

impl<Res> SignalResponse<Res> for NoSignal {
    #[inline]
    fn signal(&self, _: &Arc<str>, _: &mut Res) {}
}

/// Inserts an [`OverCapacity`] into the extensions of an `http::Response` admitted over
/// capacity. Set with [`BulkheadLayer::signal_responses`](crate::BulkheadLayer::signal_responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverCapacityExtension;

impl<B> SignalResponse<http::Response<B>> for OverCapacityExtension {
    fn signal(&self, bulkhead: &Arc<str>, response: &mut http::Response<B>) {
        response.extensions_mut().insert(OverCapacity {
            bulkhead: Arc::clone(bulkhead),
        });
    }
}

/// A response extension: the call behind this response was admitted beyond the limit of the
/// named bulkhead (policies `soft_allow` and `soft_allow_with_signal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverCapacity {
    bulkhead: Arc<str>,
}

impl OverCapacity {
    /// The name of the bulkhead that was over its limit.
    pub fn bulkhead(&self) -> &str {
        &self.bulkhead
    }
}
