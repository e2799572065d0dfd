//! Trip policies: what opens a closed breaker.
//!
//! A [`TripPolicy`] sees the outcome of every call admitted while the breaker is closed and
//! says when to open. It is pure (the caller passes `now`) and takes no lock per call, because
//! it runs on every call. The built-in policies are [`ConsecutiveFailures`] and the count- and
//! time-based sliding windows that [`Trip::FailureRate`] selects
//! (the time window takes a small lock once per bucket length, to expire a bucket, never per
//! call); users plug their own in with
//! [`CircuitBreakerLayer::with_policy`](crate::CircuitBreakerLayer::with_policy).

use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{FailureWindow, RateConfig, Trip};
use crate::window::{CountWindow, TimeWindow};

/// One call's result as a trip policy sees it. Ignored calls never reach a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// The call failed (by the breaker's classifier).
    pub failed: bool,
    /// The call took longer than the slow-call duration.
    pub slow: bool,
}

impl CallRecord {
    /// A call that succeeded in time.
    pub const SUCCESS: Self = Self {
        failed: false,
        slow: false,
    };
    /// A call that failed in time.
    pub const FAILURE: Self = Self {
        failed: true,
        slow: false,
    };
    /// A call that succeeded, slowly.
    pub const SLOW_SUCCESS: Self = Self {
        failed: false,
        slow: true,
    };
}

/// The counters a trip policy holds right now, for handles and status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// Calls in the window (or, for consecutive failures, the current run).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// `failures / calls` in percent, once the window holds its minimum number of calls.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls` in percent, once the window holds its minimum number of calls.
    pub slow_call_rate: Option<f64>,
}

/// Decides when a closed breaker opens.
///
/// Implementations are shared by every clone of a breaker and called concurrently, so they
/// keep their counters in atomics. `record` runs on every admitted call: keep it to a few
/// atomic operations and never take a lock there.
pub trait TripPolicy: Send + Sync + 'static {
    /// Records one call admitted while closed; returns `true` when the breaker should open.
    fn record(&self, call: CallRecord, now: Instant) -> bool;

    /// Forgets every recorded call: the breaker closed again or was reset.
    fn reset(&self, now: Instant);

    /// The current counters.
    fn stats(&self, now: Instant) -> WindowStats;

    /// Whether `record` and `stats` read `now`. When `false`, the breaker does not read the
    /// clock on the closed path at all.
    fn needs_clock(&self) -> bool {
        true
    }

    /// Whether calls must be timed for slow-call detection.
    fn slow_call_duration(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Opens after `threshold` failures in a row; a success resets the run.
///
/// One atomic counter. A success on an already-zero counter writes nothing, so the all-healthy
/// path does a single load.
#[derive(Debug)]
pub struct ConsecutiveFailures {
    threshold: u32,
    run: AtomicU32,
}

impl ConsecutiveFailures {
    /// A policy opening after `threshold` consecutive failures (at least 1).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            run: AtomicU32::new(0),
        }
    }
}

impl TripPolicy for ConsecutiveFailures {
    #[inline]
    fn record(&self, call: CallRecord, _now: Instant) -> bool {
        if call.failed {
            self.run.fetch_add(1, Ordering::AcqRel).saturating_add(1) >= self.threshold
        } else {
            if self.run.load(Ordering::Relaxed) != 0 {
                self.run.store(0, Ordering::Release);
            }
            false
        }
    }

    fn reset(&self, _now: Instant) {
        self.run.store(0, Ordering::Release);
    }

    fn stats(&self, _now: Instant) -> WindowStats {
        let run = u64::from(self.run.load(Ordering::Acquire));
        WindowStats {
            calls: run,
            failures: run,
            ..WindowStats::default()
        }
    }

    fn needs_clock(&self) -> bool {
        false
    }
}

/// The rate thresholds shared by both windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    pub(crate) failure_rate: f64,
    pub(crate) slow_call_rate: f64,
    pub(crate) minimum_calls: u64,
}

impl Thresholds {
    pub(crate) fn from_config(config: &RateConfig) -> Self {
        Self {
            failure_rate: config.failure_rate_threshold,
            slow_call_rate: config.slow_call_rate_threshold,
            minimum_calls: u64::from(config.minimum_calls),
        }
    }

    /// Whether these totals open the breaker.
    pub(crate) fn trips(&self, calls: u64, failures: u64, slow: u64) -> bool {
        calls >= self.minimum_calls
            && calls > 0
            && (percent(failures, calls) >= self.failure_rate
                || (slow > 0 && percent(slow, calls) >= self.slow_call_rate))
    }

    pub(crate) fn stats(&self, calls: u64, failures: u64, slow: u64) -> WindowStats {
        let judged = calls >= self.minimum_calls && calls > 0;
        WindowStats {
            calls,
            failures,
            slow_calls: slow,
            failure_rate: judged.then(|| percent(failures, calls)),
            slow_call_rate: judged.then(|| percent(slow, calls)),
        }
    }
}

#[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole as f64
}

/// The policy a breaker runs: the built-ins by value, so the call path dispatches with a
/// `match` the compiler can inline, and users' own behind a box.
pub(crate) enum Policy {
    Consecutive(ConsecutiveFailures),
    Count(CountWindow),
    Time(TimeWindow),
    Custom(Box<dyn TripPolicy>),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Policy::Consecutive($p) => $e,
            Policy::Count($p) => $e,
            Policy::Time($p) => $e,
            Policy::Custom($p) => $e,
        }
    };
}

impl Policy {
    /// Builds the policy a [`Trip`] config describes.
    pub(crate) fn from_config(trip: &Trip) -> Self {
        match trip {
            Trip::ConsecutiveFailures { threshold } => {
                Self::Consecutive(ConsecutiveFailures::new(*threshold))
            }
            Trip::FailureRate(rate) => match rate.window {
                FailureWindow::Count(size) => Self::Count(CountWindow::new(size, rate)),
                FailureWindow::Time { duration, buckets } => {
                    Self::Time(TimeWindow::new(duration, buckets, rate, Instant::now()))
                }
            },
        }
    }

    #[inline]
    pub(crate) fn record(&self, call: CallRecord, now: Instant) -> bool {
        dispatch!(self, p => p.record(call, now))
    }

    pub(crate) fn reset(&self, now: Instant) {
        dispatch!(self, p => p.reset(now));
    }

    pub(crate) fn stats(&self, now: Instant) -> WindowStats {
        dispatch!(self, p => p.stats(now))
    }

    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        dispatch!(self, p => p.needs_clock())
    }

    pub(crate) fn slow_call_duration(&self) -> Option<std::time::Duration> {
        dispatch!(self, p => p.slow_call_duration())
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Consecutive(p) => p.fmt(f),
            Self::Count(p) => p.fmt(f),
            Self::Time(p) => p.fmt(f),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: CallRecord = CallRecord::FAILURE;
    const OK: CallRecord = CallRecord::SUCCESS;

    #[test]
    fn consecutive_failures_trip_at_the_threshold_and_a_success_resets_the_run() {
        let p = ConsecutiveFailures::new(3);
        let now = Instant::now();
        assert!(!p.record(FAIL, now));
        assert!(!p.record(FAIL, now));
        assert!(!p.record(OK, now));
        assert!(!p.record(FAIL, now));
        assert!(!p.record(FAIL, now));
        assert!(p.record(FAIL, now));
        p.reset(now);
        assert_eq!(p.stats(now).failures, 0);
    }

    #[test]
    fn thresholds_wait_for_the_minimum_number_of_calls() {
        let t = Thresholds {
            failure_rate: 50.0,
            slow_call_rate: 100.0,
            minimum_calls: 4,
        };
        assert!(!t.trips(3, 3, 0));
        assert!(t.trips(4, 2, 0));
        assert!(!t.trips(4, 1, 0));
        assert!(t.trips(4, 0, 4));
        assert_eq!(t.stats(3, 3, 0).failure_rate, None);
        assert_eq!(t.stats(4, 1, 0).failure_rate, Some(25.0));
    }
}
