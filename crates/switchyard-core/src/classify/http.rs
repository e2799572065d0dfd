//! HTTP response classification.

use std::fmt;

use http::{Response, StatusCode};
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

use super::{Classify, Outcome};

/// A set of HTTP status codes as a 512-bit bitset over 100–611, so classifiers stay small and
/// `Copy` (they are copied into every response future). Codes outside that range (valid HTTP
/// ends at 599) are never members.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct StatusSet([u64; 8]);

const FIRST: u16 = 100;
const LAST: u16 = FIRST + 8 * 64 - 1;

impl StatusSet {
    fn bit(status: StatusCode) -> Option<(usize, u64)> {
        let code = status.as_u16();
        (FIRST..=LAST).contains(&code).then(|| {
            let n = usize::from(code - FIRST);
            (n / 64, 1 << (n % 64))
        })
    }

    fn insert(&mut self, status: StatusCode) {
        if let Some((word, mask)) = Self::bit(status) {
            self.0[word] |= mask;
        }
    }

    fn remove(&mut self, status: StatusCode) {
        if let Some((word, mask)) = Self::bit(status) {
            self.0[word] &= !mask;
        }
    }

    fn contains(&self, status: StatusCode) -> bool {
        Self::bit(status).is_some_and(|(word, mask)| self.0[word] & mask != 0)
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (FIRST..=LAST).filter(|n| {
            let n = usize::from(n - FIRST);
            self.0[n / 64] & (1 << (n % 64)) != 0
        })
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Classifies HTTP responses by status: server errors (5xx, as tower-http's
/// `ServerErrorsAsFailures`) are failures, and so is any `Err` (the request never got an
/// answer). Statuses can be added to the failures or ignored.
///
/// ```
/// use http::{Response, StatusCode};
/// use switchyard_core::{Classify, HttpClassifier, Outcome};
///
/// let classifier = HttpClassifier::server_errors()
///     .with_failure(StatusCode::TOO_MANY_REQUESTS)
///     .with_ignored(StatusCode::NOT_IMPLEMENTED);
/// let outcome = |status: u16| {
///     let res = Response::builder().status(status).body(()).unwrap();
///     Classify::<_, ()>::classify(&classifier, Ok(&res))
/// };
/// assert_eq!(outcome(200), Outcome::Success);
/// assert_eq!(outcome(404), Outcome::Success);
/// assert_eq!(outcome(429), Outcome::Failure);
/// assert_eq!(outcome(503), Outcome::Failure);
/// assert_eq!(outcome(501), Outcome::Ignored);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    failures: StatusSet,
    ignored: StatusSet,
}

impl HttpClassifier {
    /// 5xx responses and errors are failures; everything else is a success.
    pub fn server_errors() -> Self {
        let mut failures = StatusSet::default();
        for n in 500..600 {
            if let Ok(status) = StatusCode::from_u16(n) {
                failures.insert(status);
            }
        }
        Self {
            failures,
            ignored: StatusSet::default(),
        }
    }

    /// Also counts `status` as a failure (e.g. `429` when the backend's own limiter is a sign
    /// of distress).
    #[must_use]
    pub fn with_failure(mut self, status: StatusCode) -> Self {
        self.ignored.remove(status);
        self.failures.insert(status);
        self
    }

    /// Counts `status` as neither success nor failure.
    #[must_use]
    pub fn with_ignored(mut self, status: StatusCode) -> Self {
        self.failures.remove(status);
        self.ignored.insert(status);
        self
    }

    /// The outcome a response with this status has.
    pub fn outcome_for(&self, status: StatusCode) -> Outcome {
        if self.ignored.contains(status) {
            Outcome::Ignored
        } else if self.failures.contains(status) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::server_errors()
    }
}

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => self.outcome_for(res.status()),
            Err(_) => Outcome::Failure,
        }
    }
}

/// Adapts any `tower_http::classify::ClassifyResponse` (e.g. `StatusInRangeAsFailures`,
/// `GrpcErrorsAsFailures`) into a [`Classify`].
///
/// A classifier that can only decide at the end of the body (`RequiresEos`, as gRPC responses
/// with trailers) yields [`Outcome::Success`]: the call got an answer, and layers that decide
/// at the response head cannot wait for the body. Errors are failures.
///
/// ```
/// use http::Response;
/// use switchyard_core::{Classify, Outcome, TowerHttp};
/// use tower_http::classify::StatusInRangeAsFailures;
///
/// let classifier = TowerHttp::new(StatusInRangeAsFailures::new(400..=599));
/// let res = Response::builder().status(404).body(()).unwrap();
/// assert_eq!(Classify::<_, ()>::classify(&classifier, Ok(&res)), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TowerHttp<C> {
    inner: C,
}

impl<C> TowerHttp<C> {
    /// Wraps a tower-http classifier.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }
}

impl<C, B, E> Classify<Response<B>, E> for TowerHttp<C>
where
    C: ClassifyResponse + Clone,
{
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(res) => match self.inner.clone().classify_response(res) {
                ClassifiedResponse::Ready(Ok(())) | ClassifiedResponse::RequiresEos(_) => {
                    Outcome::Success
                }
                ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
            },
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_http::classify::ServerErrorsAsFailures;

    fn response(status: u16) -> Response<()> {
        Response::builder().status(status).body(()).unwrap()
    }

    #[test]
    fn server_errors_agree_with_tower_http() {
        let ours = HttpClassifier::server_errors();
        let theirs = TowerHttp::new(ServerErrorsAsFailures::new());
        for n in [100, 200, 204, 301, 400, 404, 429, 499, 500, 502, 503, 599] {
            let res = response(n);
            assert_eq!(
                Classify::<_, ()>::classify(&ours, Ok(&res)),
                Classify::<_, ()>::classify(&theirs, Ok(&res)),
                "status {n}"
            );
        }
    }

    #[test]
    fn codes_beyond_the_set_are_never_members_and_the_classifier_stays_small() {
        let odd = StatusCode::from_u16(750).unwrap();
        let c = HttpClassifier::server_errors().with_failure(odd);
        assert_eq!(c.outcome_for(odd), Outcome::Success);
        assert_eq!(
            c.outcome_for(StatusCode::from_u16(599).unwrap()),
            Outcome::Failure
        );
        assert_eq!(size_of::<HttpClassifier>(), 128);
    }

    #[test]
    fn errors_are_failures() {
        let err: Result<Response<()>, &str> = Err("connection refused");
        assert_eq!(
            HttpClassifier::default().classify(err.as_ref()),
            Outcome::Failure
        );
    }

    #[test]
    fn the_last_word_on_a_status_wins() {
        let c = HttpClassifier::server_errors()
            .with_ignored(StatusCode::BAD_GATEWAY)
            .with_failure(StatusCode::BAD_GATEWAY);
        assert_eq!(c.outcome_for(StatusCode::BAD_GATEWAY), Outcome::Failure);
        assert_eq!(
            format!("{:?}", HttpClassifier::server_errors().ignored),
            "{}"
        );
    }
}
