//! The `tower::retry::Policy`: which results are retried, after how long, and whether the
//! budget allows it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Counter;
use switchyard_core::{BoxError, Classify, Outcome, find_rejection};
use tokio::time::Sleep;
use tower::retry::budget::{Budget, TpsBudget};

use crate::backoff::Backoff;
use crate::config::RetryConfig;

/// How a request is copied for another attempt, and what a response says about when to retry.
///
/// [`CloneRequest`] clones any `Clone` request; [`HttpReplay`](crate::http::HttpReplay)
/// copies `http::Request`s whose method is idempotent and whose body was buffered.
pub trait Replay<Req, Res> {
    /// A copy of `req` to send if this attempt fails, or why the call cannot be retried.
    ///
    /// # Errors
    ///
    /// [`NotRetried`] says why the request cannot be sent again.
    fn replay(&self, req: &Req) -> Result<Req, NotRetried>;

    /// How long a response asks the caller to wait before trying again (HTTP `Retry-After`).
    fn retry_after(&self, _response: &Res) -> Option<Duration> {
        None
    }
}

/// Replays a request by cloning it: for any `Req: Clone`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req: Clone, Res> Replay<Req, Res> for CloneRequest {
    fn replay(&self, req: &Req) -> Result<Req, NotRetried> {
        Ok(req.clone())
    }
}

/// Why a call was not retried (a metric label and a tracing field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRetried {
    /// Every attempt allowed by `max_attempts` was made.
    Attempts,
    /// The retry budget is spent: retries already add their allowed share of the load.
    Budget,
    /// The call was refused in a way no retry can change (core's terminal rejections: no such
    /// service, shutting down).
    Terminal,
    /// The refusal or response asks to wait longer than `max_retry_after`.
    RetryAfter,
    /// The HTTP method is not idempotent and the request was not marked
    /// [`Idempotent`](crate::http::Idempotent).
    NotIdempotent,
    /// The request body was larger than `max_body_bytes`, so it was not kept for replay.
    BodyTooLarge,
}

impl NotRetried {
    /// A stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Attempts => "attempts",
            Self::Budget => "budget",
            Self::Terminal => "terminal",
            Self::RetryAfter => "retry_after",
            Self::NotIdempotent => "not_idempotent",
            Self::BodyTooLarge => "body_too_large",
        }
    }

    /// Whether the reason is the request itself (known before the first attempt) rather than
    /// the failure.
    pub const fn is_about_the_request(self) -> bool {
        matches!(self, Self::NotIdempotent | Self::BodyTooLarge)
    }

    const ALL: [Self; 6] = [
        Self::Attempts,
        Self::Budget,
        Self::Terminal,
        Self::RetryAfter,
        Self::NotIdempotent,
        Self::BodyTooLarge,
    ];
}

impl fmt::Display for NotRetried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every clone of one policy shares.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) config: RetryConfig,
    budget: Option<TpsBudget>,
    // Drawn from only when a retry is scheduled, never on a first attempt.
    rng: Mutex<fastrand::Rng>,
    retries: Counter,
    not_retried: [Counter; NotRetried::ALL.len()],
}

impl Shared {
    /// `config` must have been validated.
    pub(crate) fn new(name: Arc<str>, config: RetryConfig, seed: Option<u64>) -> Self {
        let budget = config
            .budget
            .map(|b| TpsBudget::new(b.ttl, b.min_per_sec, b.retry_ratio));
        let label = name.to_string();
        Self {
            retries: metrics::counter!("switchyard_retry_retries_total", "retry" => label.clone()),
            not_retried: NotRetried::ALL.map(|reason| {
                let name = if reason.is_about_the_request() {
                    "switchyard_retry_unreplayable_total"
                } else {
                    "switchyard_retry_not_retried_total"
                };
                metrics::counter!(name, "retry" => label.clone(), "reason" => reason.as_str())
            }),
            rng: Mutex::new(seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)),
            budget,
            config,
            name,
        }
    }

    fn not_retried(&self, reason: NotRetried, attempt: u32) {
        self.not_retried[reason as usize].increment(1);
        if reason.is_about_the_request() {
            tracing::debug!(
                target: "switchyard_retry",
                retry = %self.name,
                reason = reason.as_str(),
                "sent without a copy: not retried if it fails"
            );
        } else {
            tracing::debug!(
                target: "switchyard_retry",
                retry = %self.name,
                attempt,
                reason = reason.as_str(),
                "not retried"
            );
        }
    }
}

/// The retry policy: a [`tower::retry::Policy`] over `BoxError` results.
///
/// A result is retried when the classifier `C` calls it a failure, or when it is a
/// non-terminal switchyard rejection, as long as attempts remain, the budget allows it and any
/// `retry_after` is within `max_retry_after`; the delay is the backoff with jitter, and at
/// least the `retry_after` asked for. `R` copies the request for the next attempt.
///
/// tower's `Retry` clones the policy once per call, so a clone counts its own call's attempts;
/// the budget, the random source and the metrics are shared.
pub struct RetryPolicy<C, R> {
    shared: Arc<Shared>,
    classifier: C,
    replay: R,
    attempts: u32,
    backoff: Backoff,
}

impl<C, R> RetryPolicy<C, R> {
    pub(crate) fn new(shared: Arc<Shared>, classifier: C, replay: R) -> Self {
        let backoff = Backoff::new(shared.config.backoff, shared.config.jitter);
        Self {
            shared,
            classifier,
            replay,
            attempts: 0,
            backoff,
        }
    }

    /// The retry's name (in metrics and events).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The config it retries by.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The delay before the next attempt of a call that failed in a retryable way, or why
    /// there is none.
    fn decide(&mut self, retry_after: Option<Duration>) -> Result<Duration, NotRetried> {
        let shared = &*self.shared;
        if self.attempts >= shared.config.max_attempts {
            return Err(NotRetried::Attempts);
        }
        if retry_after.is_some_and(|after| after > shared.config.max_retry_after) {
            return Err(NotRetried::RetryAfter);
        }
        if let Some(budget) = &shared.budget
            && !budget.withdraw()
        {
            return Err(NotRetried::Budget);
        }
        // One delay per retry, so the backoff's count follows `attempts`.
        let jittered = {
            // Poisoned only if a draw panicked, which it cannot; the generator stays usable.
            let mut rng = switchyard_core::sync::lock(&shared.rng);
            self.backoff.next_delay(&mut rng)
        };
        Ok(jittered.max(retry_after.unwrap_or_default()))
    }
}

impl<C: Clone, R: Clone> Clone for RetryPolicy<C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            attempts: self.attempts,
            backoff: self.backoff.clone(),
        }
    }
}

impl<C, R> fmt::Debug for RetryPolicy<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("retry", &self.shared.name)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl<C, R, Req, Res> tower::retry::Policy<Req, Res, BoxError> for RetryPolicy<C, R>
where
    C: Classify<Res, BoxError>,
    R: Replay<Req, Res>,
{
    type Future = Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Sleep> {
        self.attempts += 1;
        if self.attempts == 1
            && let Some(budget) = &self.shared.budget
        {
            // Every call's first attempt earns the budget its share of retries.
            budget.deposit();
        }
        let verdict = match result {
            Ok(response) => match self.classifier.classify(Ok(response)) {
                Outcome::Failure => Ok(self.replay.retry_after(response)),
                Outcome::Success | Outcome::Ignored => return None,
            },
            Err(error) => match find_rejection(&**error) {
                Some(rejection) if rejection.kind().is_terminal() => Err(NotRetried::Terminal),
                Some(rejection) => Ok(rejection.retry_after()),
                None => match self.classifier.classify(Err(error)) {
                    Outcome::Failure => Ok(None),
                    Outcome::Success | Outcome::Ignored => return None,
                },
            },
        };
        match verdict.and_then(|retry_after| self.decide(retry_after)) {
            Ok(delay) => {
                self.shared.retries.increment(1);
                tracing::debug!(
                    target: "switchyard_retry",
                    retry = %self.shared.name,
                    attempt = self.attempts,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "retrying"
                );
                Some(tokio::time::sleep(delay))
            }
            Err(reason) => {
                self.shared.not_retried(reason, self.attempts);
                None
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        match self.replay.replay(req) {
            Ok(copy) => Some(copy),
            Err(reason) => {
                self.shared.not_retried(reason, self.attempts);
                None
            }
        }
    }
}
