//! gRPC outcome classification by `tonic::Code` sets.

use tonic::Code;

use super::{Classify, Outcome};
use crate::BoxError;

const GRPC_STATUS: &str = "grpc-status";

const fn bit(code: Code) -> u32 {
    1 << (code as u32)
}

/// Classifies gRPC calls by status code.
///
/// By default the codes that say the *server* is unwell are failures (`UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`),
/// `CANCELLED` is ignored (the caller gave up), and every other code is a success: the server
/// answered, and a client's `INVALID_ARGUMENT` says nothing against it.
///
/// It reads the code from, in order: a `tonic::Status` error (also found inside a
/// [`BoxError`] chain), or the `grpc-status` header of a trailers-only response, which is how
/// servers answer a unary call that fails before sending a message. A response whose status
/// comes only in trailers is a success here: a layer deciding at the response head cannot wait
/// for the body. Any other `Err` (a transport error) is a failure.
///
/// ```
/// use switchyard_core::{Classify, GrpcClassifier, Outcome};
/// use tonic::{Code, Status};
///
/// let classifier = GrpcClassifier::new().with_failure(Code::Aborted);
/// let call = |code: Code| -> Result<tonic::Response<()>, Status> { Err(Status::new(code, "")) };
/// assert_eq!(classifier.classify(call(Code::Unavailable).as_ref()), Outcome::Failure);
/// assert_eq!(classifier.classify(call(Code::Aborted).as_ref()), Outcome::Failure);
/// assert_eq!(classifier.classify(call(Code::NotFound).as_ref()), Outcome::Success);
/// assert_eq!(classifier.classify(call(Code::Cancelled).as_ref()), Outcome::Ignored);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    failures: u32,
    ignored: u32,
}

impl GrpcClassifier {
    /// The default code sets (see the type's docs).
    pub const fn new() -> Self {
        Self {
            failures: bit(Code::Unknown)
                | bit(Code::DeadlineExceeded)
                | bit(Code::ResourceExhausted)
                | bit(Code::Internal)
                | bit(Code::Unavailable)
                | bit(Code::DataLoss),
            ignored: bit(Code::Cancelled),
        }
    }

    /// Also counts `code` as a failure.
    #[must_use]
    pub const fn with_failure(mut self, code: Code) -> Self {
        self.failures |= bit(code);
        self.ignored &= !bit(code);
        self
    }

    /// Counts `code` as neither success nor failure.
    #[must_use]
    pub const fn with_ignored(mut self, code: Code) -> Self {
        self.ignored |= bit(code);
        self.failures &= !bit(code);
        self
    }

    /// Counts `code` as a success.
    #[must_use]
    pub const fn with_success(mut self, code: Code) -> Self {
        self.failures &= !bit(code);
        self.ignored &= !bit(code);
        self
    }

    /// The outcome a call that ended with `code` has.
    pub const fn outcome_for(&self, code: Code) -> Outcome {
        if self.ignored & bit(code) != 0 {
            Outcome::Ignored
        } else if self.failures & bit(code) != 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    fn outcome_for_error(self, err: &BoxError) -> Outcome {
        match crate::find_cause::<tonic::Status>(&**err) {
            Some(status) => self.outcome_for(status.code()),
            None => Outcome::Failure,
        }
    }

    fn outcome_for_head(self, headers: &http::HeaderMap) -> Outcome {
        headers
            .get(GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(Outcome::Success, |n| self.outcome_for(Code::from_i32(n)))
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> Classify<http::Response<B>, BoxError> for GrpcClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => self.outcome_for_head(res.headers()),
            Err(err) => self.outcome_for_error(err),
        }
    }
}

impl<B> Classify<http::Response<B>, tonic::Status> for GrpcClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &tonic::Status>) -> Outcome {
        match result {
            Ok(res) => self.outcome_for_head(res.headers()),
            Err(status) => self.outcome_for(status.code()),
        }
    }
}

impl<T> Classify<tonic::Response<T>, tonic::Status> for GrpcClassifier {
    fn classify(&self, result: Result<&tonic::Response<T>, &tonic::Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) => self.outcome_for(status.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_code_of_a_trailers_only_response() {
        let c = GrpcClassifier::new();
        let res = |code: &str| {
            http::Response::builder()
                .header(GRPC_STATUS, code)
                .body(())
                .unwrap()
        };
        let outcome = |r: &http::Response<()>| Classify::<_, BoxError>::classify(&c, Ok(r));
        assert_eq!(outcome(&res("14")), Outcome::Failure);
        assert_eq!(outcome(&res("0")), Outcome::Success);
        assert_eq!(outcome(&res("5")), Outcome::Success);
        assert_eq!(outcome(&res("1")), Outcome::Ignored);
        assert_eq!(outcome(&res("garbage")), Outcome::Success);
        assert_eq!(outcome(&http::Response::new(())), Outcome::Success);
    }

    #[test]
    fn finds_a_status_inside_a_box_error_and_fails_other_errors() {
        let c = GrpcClassifier::new();
        let status: BoxError = Box::new(tonic::Status::invalid_argument("bad"));
        let transport: BoxError = "connection reset".into();
        let outcome = |e: &BoxError| Classify::<http::Response<()>, _>::classify(&c, Err(e));
        assert_eq!(outcome(&status), Outcome::Success);
        assert_eq!(outcome(&transport), Outcome::Failure);
    }

    #[test]
    fn a_code_moved_to_success_leaves_both_sets() {
        let c = GrpcClassifier::new()
            .with_ignored(Code::Internal)
            .with_success(Code::Internal);
        assert_eq!(c.outcome_for(Code::Internal), Outcome::Success);
    }
}
