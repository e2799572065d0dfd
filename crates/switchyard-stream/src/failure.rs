//! Failure kinds, per-message failures and the summary of one stream.

use std::fmt;

use serde::Serialize;
use switchyard_core::{RejectionKind, find_rejection};
use tower::BoxError;

/// Why a message (or the stream) did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No failure.
    #[default]
    None,
    /// The handler returned an error (after its retries).
    HandlerError,
    /// The caller cancelled the stream.
    ContextCancelled,
    /// Rejected by the backpressure policy.
    Backpressure,
    /// Rejected because the ordering queue was full.
    Ordering,
    /// Rejected or cancelled because the pipeline is shutting down.
    Shutdown,
    /// The handler panicked, or the pipeline failed internally.
    Internal,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::None,
        Self::HandlerError,
        Self::ContextCancelled,
        Self::Backpressure,
        Self::Ordering,
        Self::Shutdown,
        Self::Internal,
    ];

    /// Whether the same message may succeed if tried again: a handler error, or a load
    /// refusal once the load has passed. The engine retries only these.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::HandlerError | Self::Backpressure)
    }

    /// Whether the failure ends the stream: nothing after it can succeed (the caller left,
    /// the pipeline is going away).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::ContextCancelled | Self::Shutdown)
    }

    /// Whether the message was skipped while later messages of its key went on, so the
    /// key's order is no longer "every earlier message done": reported in the summary.
    /// A terminal failure breaks nothing (nothing after it runs).
    pub const fn breaks_ordering(self) -> bool {
        matches!(
            self,
            Self::HandlerError | Self::Backpressure | Self::Ordering | Self::Internal
        )
    }

    /// The core rejection kind this failure aligns with, if any (for the HTTP/gRPC mapping
    /// every switchyard layer shares).
    pub const fn rejection_kind(self) -> Option<RejectionKind> {
        match self {
            Self::Backpressure | Self::Ordering => Some(RejectionKind::Overloaded),
            Self::Shutdown => Some(RejectionKind::Shutdown),
            Self::Internal => Some(RejectionKind::Panic),
            Self::None | Self::HandlerError | Self::ContextCancelled => None,
        }
    }

    /// The gRPC status code for a stream ending with this failure: core's mapping for the
    /// kinds core knows ([`rejection_kind`](Self::rejection_kind): `RESOURCE_EXHAUSTED`,
    /// `UNAVAILABLE`, `INTERNAL`), `CANCELLED` for a cancelled caller, `UNKNOWN` for a handler
    /// error, `OK` for none.
    pub fn code(self) -> tonic::Code {
        if let Some(kind) = self.rejection_kind() {
            return kind.tonic_code();
        }
        // The kinds core has no name for.
        match self {
            Self::HandlerError => tonic::Code::Unknown,
            Self::ContextCancelled => tonic::Code::Cancelled,
            _ => tonic::Code::Ok,
        }
    }

    /// A stable snake_case name, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::HandlerError => "handler_error",
            Self::ContextCancelled => "context_cancelled",
            Self::Backpressure => "backpressure",
            Self::Ordering => "ordering",
            Self::Shutdown => "shutdown",
            Self::Internal => "internal",
        }
    }

    /// Classifies a handler's error: core rejections by their kind (a bulkhead or rate limit
    /// inside the handler is `Backpressure`, shutdown `Shutdown`, the terminal ones — a caught
    /// panic, a missing service or route — `Internal`, never retried), a cancelled or
    /// deadline-exceeded `tonic::Status` as `ContextCancelled`, anything else `HandlerError`.
    pub fn classify(error: &BoxError) -> Self {
        if let Some(rejection) = find_rejection(&**error) {
            return match rejection.kind() {
                RejectionKind::BulkheadFull
                | RejectionKind::RateLimited
                | RejectionKind::Overloaded => Self::Backpressure,
                RejectionKind::Shutdown => Self::Shutdown,
                kind if kind.is_terminal() => Self::Internal,
                _ => Self::HandlerError,
            };
        }
        if let Some(status) = error.downcast_ref::<tonic::Status>()
            && matches!(
                status.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            )
        {
            return Self::ContextCancelled;
        }
        Self::HandlerError
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageFailure {
    /// Its sequence number (1 for the stream's first message).
    pub seq: u64,
    /// Its ordering key ("" under global FIFO).
    pub key: String,
    /// Why.
    pub kind: FailureKind,
    /// Attempts made (0 if it was rejected before running).
    pub attempts: u32,
    /// The error, as text.
    pub error: String,
}

/// What happened to one stream: the pipeline's answer, for the RPC's single response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Messages read from the stream.
    pub received: u64,
    /// Messages the handler completed.
    pub succeeded: u64,
    /// Messages that ran and failed (handler errors after their retries, panics, messages
    /// cancelled at the end of the grace period).
    pub failed: u64,
    /// Messages rejected before running (backpressure, ordering, shutdown).
    pub rejected: u64,
    /// Retries made (attempts beyond each message's first).
    pub retries: u64,
    /// Messages run beyond the backpressure capacity (soft-allow policies).
    pub over_capacity: u64,
    /// The failed and rejected messages, in sequence order (at most
    /// [`MAX_REPORTED_FAILURES`]; `failures_not_reported` counts the rest).
    pub failures: Vec<MessageFailure>,
    /// Failures beyond the ones listed.
    pub failures_not_reported: u64,
    /// Whether some key's order may be broken: a message failed or was rejected with a kind
    /// that [`breaks_ordering`](FailureKind::breaks_ordering), so later messages of its key
    /// (if any came) ran without it.
    pub ordering_broken: bool,
    /// How the stream ended: `None` when it ended normally, else the terminal kind
    /// (`ContextCancelled`, `Shutdown`, or `Internal` for a transport error).
    pub end: FailureKind,
    /// The terminal error, as text.
    pub end_error: Option<String>,
    /// The gRPC code the stream itself failed with, when it broke (a transport or decoding
    /// error): [`status`](Self::status) answers with it.
    pub end_code: Option<i32>,
}

/// The most failures a [`Summary`] lists.
pub const MAX_REPORTED_FAILURES: usize = 1000;

impl Summary {
    /// The RPC's status: `Ok` unless the stream ended with a terminal failure (message
    /// failures are in the summary, not the status).
    ///
    /// # Errors
    ///
    /// A `tonic::Status` with [`FailureKind::code`] and the terminal error.
    pub fn status(&self) -> Result<(), tonic::Status> {
        if self.end == FailureKind::None {
            return Ok(());
        }
        Err(tonic::Status::new(
            self.end_code.map_or(self.end.code(), tonic::Code::from_i32),
            self.end_error
                .clone()
                .unwrap_or_else(|| self.end.as_str().to_owned()),
        ))
    }

    pub(crate) fn record(&mut self, failure: MessageFailure, ran: bool) {
        if ran {
            self.failed += 1;
        } else {
            self.rejected += 1;
        }
        self.ordering_broken |= failure.kind.breaks_ordering();
        if self.failures.len() < MAX_REPORTED_FAILURES {
            self.failures.push(failure);
        } else {
            self.failures_not_reported += 1;
        }
    }
}
