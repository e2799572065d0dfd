//! Passive outlier ejection as a pure state machine: one endpoint's consecutive failures, its
//! failure-rate window, how often it was ejected and until when, advanced by each classified
//! outcome recorded at `now`.
//!
//! `now` is the balancer's clock: nanoseconds since its epoch, at least 1, so 0 can mean
//! "never". Nothing here reads a clock, takes a lock or knows about services; whether the
//! balancer may eject one more endpoint (the `max_ejection_percent` cap, Envoy's rule) is a
//! [`Cap`] the caller answers when asked, and [`Cap::decide`] is that rule, pure as well.

use std::time::Duration;

use switchyard_core::Outcome;

use crate::config::OutlierConfig;

/// One endpoint's outlier-detection state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutlierState {
    consecutive_failures: u32,
    /// The failure-rate window (a tumbling one): calls and failures counted so far.
    window_calls: u32,
    window_failures: u32,
    /// Ejections in the current run; the run starts over once the endpoint has stayed in for
    /// `max_ejection`.
    times_ejected: u32,
    /// The end of the last ejection (0: never ejected). Kept once it has passed: how long the
    /// endpoint has been back since decides whether the next ejection starts a new run.
    ejected_until: u64,
}

/// Whether the balancer lets one more endpoint be ejected, asked only when an outcome reaches
/// a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// Eject it.
    Allows,
    /// Keep it in: ejecting it would pass `max_ejection_percent`, or leave no eligible
    /// endpoint. Its failure streak starts over.
    Refuses,
    /// The endpoint has left its balancer: its calls say nothing about the members, and
    /// nothing is reset.
    Gone,
}

/// What recording an outcome calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing.
    Stay,
    /// It was ejected, for `length`, the `times`-th time in a row.
    Ejected {
        /// Ejections in the current run, this one included.
        times: u32,
        /// How long it stays out.
        length: Duration,
    },
    /// A threshold was reached, but the cap kept it in.
    Spared,
}

// === impl OutlierState ===

impl OutlierState {
    /// Whether it is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until > now
    }

    /// Whether a streak of failures is open (a success would end it).
    pub(crate) fn streak_open(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// While it is ejected at `now`: when it returns.
    pub(crate) fn returns_at(&self, now: u64) -> Option<u64> {
        self.is_ejected(now).then_some(self.ejected_until)
    }

    /// Records `outcome` at `now`, unless it reaches a threshold — which needs the balancer's
    /// [`Cap`], and so the balancer's lock: then it records nothing and answers `false`, and
    /// the caller [`record`](Self::record)s it with the cap at hand.
    pub(crate) fn try_record(
        &mut self,
        outcome: Outcome,
        now: u64,
        config: &OutlierConfig,
    ) -> bool {
        if self.reaches_threshold(outcome, config) {
            return false;
        }
        // No threshold is reached, so the cap is never asked.
        let verdict = self.record(outcome, now, config, || Cap::Gone);
        debug_assert_eq!(verdict, Verdict::Stay);
        true
    }

    /// Records `outcome` at `now`. `cap` is asked at most once, and only when a threshold is
    /// reached by an endpoint that is not already ejected.
    ///
    /// A failure adds to the streak of consecutive failures, a success ends it; both count in
    /// the failure-rate window (if configured), which is judged and started over each time it
    /// holds `minimum_calls`. An ignored outcome changes nothing.
    pub(crate) fn record(
        &mut self,
        outcome: Outcome,
        now: u64,
        config: &OutlierConfig,
        cap: impl FnOnce() -> Cap,
    ) -> Verdict {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return Verdict::Stay,
        };
        let mut cap = Ask::new(cap);
        let mut verdict = Verdict::Stay;
        if failed {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= config.consecutive_failures {
                verdict = self.try_eject(now, config, &mut cap);
            }
        } else {
            self.consecutive_failures = 0;
        }
        // Counted after an ejection above, which emptied the window: the call that tripped
        // the streak opens the next window.
        if let Some(rate) = &config.failure_rate {
            self.window_calls = self.window_calls.saturating_add(1);
            self.window_failures = self.window_failures.saturating_add(u32::from(failed));
            if self.window_calls >= rate.minimum_calls {
                let (calls, failures) = (self.window_calls, self.window_failures);
                self.window_calls = 0;
                self.window_failures = 0;
                // After an ejection or a refusal above, asking again would change nothing.
                if verdict == Verdict::Stay && rate.reached(failures, calls) {
                    verdict = self.try_eject(now, config, &mut cap);
                }
            }
        }
        verdict
    }

    /// Whether recording `outcome` now would reach a threshold (and so ask the cap, unless
    /// the endpoint is already ejected).
    fn reaches_threshold(&self, outcome: Outcome, config: &OutlierConfig) -> bool {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return false,
        };
        if failed && self.consecutive_failures.saturating_add(1) >= config.consecutive_failures {
            return true;
        }
        // The streak did not trip, so the window is as it stands.
        config.failure_rate.as_ref().is_some_and(|rate| {
            let calls = self.window_calls.saturating_add(1);
            let failures = self.window_failures.saturating_add(u32::from(failed));
            calls >= rate.minimum_calls && rate.reached(failures, calls)
        })
    }

    fn try_eject<F: FnOnce() -> Cap>(
        &mut self,
        now: u64,
        config: &OutlierConfig,
        cap: &mut Ask<F>,
    ) -> Verdict {
        // Calls that were in flight when it was ejected finish while it is out: they neither
        // extend the ejection nor count against the cap.
        if self.is_ejected(now) {
            return Verdict::Stay;
        }
        match cap.answer() {
            Cap::Gone => Verdict::Stay,
            Cap::Refuses => {
                self.consecutive_failures = 0;
                Verdict::Spared
            }
            Cap::Allows => self.eject(now, config),
        }
    }

    fn eject(&mut self, now: u64, config: &OutlierConfig) -> Verdict {
        // An endpoint that has stayed in for `max_ejection` since its last ejection ended
        // starts over at one `base_ejection`.
        let max_ns = nanos(config.max_ejection);
        if self.ejected_until > 0 && now > self.ejected_until.saturating_add(max_ns) {
            self.times_ejected = 0;
        }
        self.times_ejected = self.times_ejected.saturating_add(1);
        let length = config
            .base_ejection
            .saturating_mul(self.times_ejected)
            .min(config.max_ejection);
        self.ejected_until = now.saturating_add(nanos(length));
        self.consecutive_failures = 0;
        self.window_calls = 0;
        self.window_failures = 0;
        Verdict::Ejected {
            times: self.times_ejected,
            length,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The cap, asked once and remembered.
struct Ask<F> {
    ask: Option<F>,
    answer: Option<Cap>,
}

impl<F: FnOnce() -> Cap> Ask<F> {
    fn new(ask: F) -> Self {
        Self {
            ask: Some(ask),
            answer: None,
        }
    }

    fn answer(&mut self) -> Cap {
        if let Some(ask) = self.ask.take() {
            self.answer = Some(ask());
        }
        self.answer.unwrap_or(Cap::Gone)
    }
}

// === impl Cap ===

impl Cap {
    /// The balancer's rule (Envoy's): eject while the ejected share of the `members` is below
    /// `max_ejection_percent` — so one endpoint can always be ejected when the maximum is
    /// above 0 — but never the last eligible one. `ejected` counts the members ejected now,
    /// `others_eligible` whether an endpoint other than this one is eligible; `member`
    /// whether it is still in the balancer.
    pub(crate) fn decide(
        member: bool,
        ejected: usize,
        members: usize,
        max_ejection_percent: u8,
        others_eligible: bool,
    ) -> Self {
        if !member {
            return Self::Gone;
        }
        let below_max =
            ejected.saturating_mul(100) < members.saturating_mul(usize::from(max_ejection_percent));
        if below_max && others_eligible {
            Self::Allows
        } else {
            Self::Refuses
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::FailureRate;

    use Outcome::{Failure, Ignored, Success};

    const SEC: u64 = 1_000_000_000;
    /// A time well after the epoch, so ejections end far from 0.
    const T0: u64 = 1_000 * SEC;

    fn config(consecutive: u32, base_s: u64, max_s: u64) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: consecutive,
            base_ejection: Duration::from_secs(base_s),
            max_ejection: Duration::from_secs(max_s),
            max_ejection_percent: 50,
            failure_rate: None,
        }
    }

    /// Only the failure rate ejects: the streak threshold is out of reach.
    fn rate(threshold_percent: u8, minimum_calls: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: u32::MAX,
            failure_rate: Some(FailureRate {
                threshold_percent,
                minimum_calls,
            }),
            ..config(1, 10, 300)
        }
    }

    fn allow() -> Cap {
        Cap::Allows
    }

    fn ejected(times: u32, secs: u64) -> Verdict {
        Verdict::Ejected {
            times,
            length: Duration::from_secs(secs),
        }
    }

    /// Records `outcomes` at `now`, the cap allowing; answers the last verdict.
    fn feed(
        state: &mut OutlierState,
        config: &OutlierConfig,
        now: u64,
        outcomes: &[Outcome],
    ) -> Verdict {
        outcomes
            .iter()
            .fold(Verdict::Stay, |_, o| state.record(*o, now, config, allow))
    }

    // === consecutive failures ===

    #[test]
    fn consecutive_failures_trip_an_ejection() {
        let config = config(3, 10, 300);
        let mut state = OutlierState::default();
        assert_eq!(
            feed(&mut state, &config, T0, &[Failure, Failure]),
            Verdict::Stay
        );
        assert!(!state.is_ejected(T0));
        assert_eq!(state.record(Failure, T0, &config, allow), ejected(1, 10));
        assert!(state.is_ejected(T0));
        assert_eq!(state.returns_at(T0), Some(T0 + 10 * SEC));
    }

    #[test]
    fn a_success_ends_the_streak() {
        let config = config(3, 10, 300);
        let mut state = OutlierState::default();
        let outcomes = [Failure, Failure, Success, Failure, Failure];
        assert_eq!(feed(&mut state, &config, T0, &outcomes), Verdict::Stay);
        assert_eq!(state.record(Failure, T0, &config, allow), ejected(1, 10));
    }

    #[test]
    fn a_streak_is_open_from_a_failure_until_a_success_an_ejection_or_a_refusal() {
        let config = config(2, 10, 300);
        let mut state = OutlierState::default();
        assert!(!state.streak_open());
        state.record(Failure, T0, &config, allow);
        assert!(state.streak_open());
        state.record(Success, T0, &config, allow);
        assert!(!state.streak_open());
        // Without a window, a success with no streak open changes nothing at all.
        let before = state;
        state.record(Success, T0, &config, allow);
        assert_eq!(state, before);
        feed(&mut state, &config, T0, &[Failure, Failure]);
        assert!(state.is_ejected(T0) && !state.streak_open(), "ejected");
        let back = state.returns_at(T0).expect("ejected");
        state.record(Failure, back, &config, allow);
        state.record(Failure, back, &config, || Cap::Refuses);
        assert!(!state.streak_open(), "spared");
    }

    #[test]
    fn ignored_outcomes_change_nothing() {
        let config = rate(50, 2);
        let mut state = OutlierState::default();
        feed(&mut state, &config, T0, &[Failure]);
        let before = state;
        assert_eq!(state.record(Ignored, T0, &config, allow), Verdict::Stay);
        assert!(state.try_record(Ignored, T0, &config));
        assert_eq!(state, before);
    }

    #[test]
    fn a_threshold_of_one_ejects_on_the_first_failure() {
        let config = config(1, 10, 300);
        let mut state = OutlierState::default();
        assert_eq!(state.record(Failure, T0, &config, allow), ejected(1, 10));
    }

    // === the cap ===

    #[test]
    fn the_cap_is_asked_only_when_a_threshold_is_reached_and_once_per_outcome() {
        let config = OutlierConfig {
            failure_rate: Some(FailureRate {
                threshold_percent: 50,
                minimum_calls: 2,
            }),
            ..config(2, 10, 300)
        };
        let asked = Cell::new(0);
        let refuse = || {
            asked.set(asked.get() + 1);
            Cap::Refuses
        };
        let mut state = OutlierState::default();
        assert_eq!(state.record(Success, T0, &config, refuse), Verdict::Stay);
        assert_eq!(asked.get(), 0);
        // The window fills at 1 failure of 2: asked.
        assert_eq!(state.record(Failure, T0, &config, refuse), Verdict::Spared);
        assert_eq!(asked.get(), 1);
        assert_eq!(state.record(Failure, T0, &config, refuse), Verdict::Stay);
        assert_eq!(asked.get(), 1);
        // The streak and the window both reach their thresholds: asked once.
        assert_eq!(state.record(Failure, T0, &config, refuse), Verdict::Spared);
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn a_refusing_cap_spares_the_endpoint_and_its_streak_starts_over() {
        let config = config(3, 10, 300);
        let mut state = OutlierState::default();
        feed(&mut state, &config, T0, &[Failure, Failure]);
        assert_eq!(
            state.record(Failure, T0, &config, || Cap::Refuses),
            Verdict::Spared
        );
        assert!(!state.is_ejected(T0));
        // Two more failures do not trip it: the streak restarted at zero.
        assert_eq!(
            feed(&mut state, &config, T0, &[Failure, Failure]),
            Verdict::Stay
        );
        assert_eq!(state.record(Failure, T0, &config, allow), ejected(1, 10));
    }

    #[test]
    fn an_endpoint_gone_from_its_balancer_keeps_its_streak() {
        let config = config(2, 10, 300);
        let mut state = OutlierState::default();
        feed(&mut state, &config, T0, &[Failure]);
        assert_eq!(
            state.record(Failure, T0, &config, || Cap::Gone),
            Verdict::Stay
        );
        assert!(!state.is_ejected(T0));
        // Nothing was reset: the next failure reaches the threshold again.
        assert_eq!(state.record(Failure, T0, &config, allow), ejected(1, 10));
    }

    #[test]
    fn the_cap_rule_keeps_the_ejected_share_below_the_maximum() {
        // Four members at 50%: a first and a second may go, a third may not.
        assert_eq!(Cap::decide(true, 0, 4, 50, true), Cap::Allows);
        assert_eq!(Cap::decide(true, 1, 4, 50, true), Cap::Allows);
        assert_eq!(Cap::decide(true, 2, 4, 50, true), Cap::Refuses);
        // Below the maximum before the ejection is enough (Envoy's rule): 1 of 3 out at 50%
        // lets a second go, to 67%.
        assert_eq!(Cap::decide(true, 1, 3, 50, true), Cap::Allows);
        assert_eq!(Cap::decide(true, 2, 3, 50, true), Cap::Refuses);
        // Any maximum above 0 lets one go; 0 lets none.
        assert_eq!(Cap::decide(true, 0, 100, 1, true), Cap::Allows);
        assert_eq!(Cap::decide(true, 1, 100, 1, true), Cap::Refuses);
        assert_eq!(Cap::decide(true, 0, 4, 0, true), Cap::Refuses);
        // 100% lets all but the last eligible one go.
        assert_eq!(Cap::decide(true, 3, 4, 100, true), Cap::Allows);
        assert_eq!(Cap::decide(true, 3, 4, 100, false), Cap::Refuses);
        assert_eq!(Cap::decide(true, 0, 1, 100, false), Cap::Refuses);
        // An endpoint no longer in the balancer is gone, whatever the counts.
        assert_eq!(Cap::decide(false, 0, 4, 100, true), Cap::Gone);
        assert_eq!(Cap::decide(false, 4, 4, 0, false), Cap::Gone);
    }

    // === ejection length, return, the run of ejections ===

    #[test]
    fn it_returns_exactly_when_its_ejection_ends() {
        let config = config(1, 10, 300);
        let mut state = OutlierState::default();
        state.record(Failure, T0, &config, allow);
        let until = T0 + 10 * SEC;
        assert!(state.is_ejected(until - 1));
        assert_eq!(state.returns_at(until - 1), Some(until));
        assert!(!state.is_ejected(until));
        assert_eq!(state.returns_at(until), None);
    }

    #[test]
    fn each_ejection_in_a_run_is_one_base_longer_up_to_the_maximum() {
        let config = config(1, 10, 35);
        let mut state = OutlierState::default();
        let mut now = T0;
        for (times, secs) in [(1, 10), (2, 20), (3, 30), (4, 35), (5, 35)] {
            assert_eq!(
                state.record(Failure, now, &config, allow),
                ejected(times, secs)
            );
            // Fails again the moment it returns.
            now = state.returns_at(now).expect("ejected");
        }
    }

    #[test]
    fn the_run_starts_over_once_it_has_stayed_in_for_the_maximum() {
        let config = config(1, 10, 15);
        let max = 15 * SEC;
        // Back for exactly `max_ejection`: still the same run.
        let mut state = OutlierState::default();
        state.record(Failure, T0, &config, allow);
        let back = T0 + 10 * SEC;
        assert_eq!(
            state.record(Failure, back + max, &config, allow),
            ejected(2, 15)
        );
        // Back for longer: a new run, one base long.
        let mut state = OutlierState::default();
        state.record(Failure, T0, &config, allow);
        assert_eq!(
            state.record(Failure, back + max + 1, &config, allow),
            ejected(1, 10)
        );
    }

    #[test]
    fn failures_while_ejected_neither_extend_it_nor_ask_the_cap() {
        let config = config(2, 10, 300);
        let mut state = OutlierState::default();
        feed(&mut state, &config, T0, &[Failure, Failure]);
        let until = state.returns_at(T0).expect("ejected");
        // Calls that were in flight fail while it is out.
        let asked = Cell::new(false);
        for _ in 0..3 {
            let verdict = state.record(Failure, T0 + SEC, &config, || {
                asked.set(true);
                Cap::Allows
            });
            assert_eq!(verdict, Verdict::Stay);
        }
        assert!(!asked.get());
        assert_eq!(state.returns_at(T0 + SEC), Some(until));
        // Their streak still stands when it returns: the next failure ejects it again.
        assert_eq!(state.record(Failure, until, &config, allow), ejected(2, 20));
    }

    #[test]
    fn lengths_and_times_saturate() {
        let config = OutlierConfig {
            base_ejection: Duration::from_secs(u64::MAX / 2),
            max_ejection: Duration::MAX,
            ..config(1, 1, 1)
        };
        let mut state = OutlierState::default();
        let now = u64::MAX - 5;
        assert!(matches!(
            state.record(Failure, now, &config, allow),
            Verdict::Ejected { times: 1, .. }
        ));
        assert_eq!(state.returns_at(now), Some(u64::MAX));
        assert!(state.is_ejected(u64::MAX - 1));
    }

    // === the failure-rate window ===

    #[test]
    fn the_failure_rate_is_judged_only_on_a_full_window() {
        let config = rate(40, 10);
        let mut state = OutlierState::default();
        // Nine calls, all failures: 100%, but the window is not full.
        assert_eq!(feed(&mut state, &config, T0, &[Failure; 9]), Verdict::Stay);
        assert!(!state.is_ejected(T0));
        assert_eq!(state.record(Success, T0, &config, allow), ejected(1, 10));
    }

    #[test]
    fn a_rate_exactly_at_the_threshold_ejects_and_one_call_less_does_not() {
        let config = rate(40, 10);
        let mut at = OutlierState::default();
        let mut outcomes = [Success; 10];
        outcomes[..4].fill(Failure);
        assert_eq!(feed(&mut at, &config, T0, &outcomes), ejected(1, 10));

        let mut below = OutlierState::default();
        outcomes[3] = Success;
        assert_eq!(feed(&mut below, &config, T0, &outcomes), Verdict::Stay);
    }

    #[test]
    fn the_window_tumbles() {
        let config = rate(50, 4);
        let mut state = OutlierState::default();
        // A window at 25% passes and is forgotten ...
        assert_eq!(
            feed(
                &mut state,
                &config,
                T0,
                &[Failure, Success, Success, Success]
            ),
            Verdict::Stay
        );
        // ... so the next needs two failures of its own.
        assert_eq!(
            feed(
                &mut state,
                &config,
                T0,
                &[Failure, Success, Success, Success]
            ),
            Verdict::Stay
        );
        assert_eq!(
            feed(
                &mut state,
                &config,
                T0,
                &[Failure, Success, Success, Failure]
            ),
            ejected(1, 10)
        );
    }

    #[test]
    fn a_threshold_of_one_hundred_percent_needs_every_call_to_fail() {
        let config = rate(100, 3);
        let mut state = OutlierState::default();
        assert_eq!(
            feed(&mut state, &config, T0, &[Failure, Failure, Success]),
            Verdict::Stay
        );
        assert_eq!(feed(&mut state, &config, T0, &[Failure; 3]), ejected(1, 10));
    }

    #[test]
    fn a_window_of_one_call_judges_each_call() {
        let config = rate(1, 1);
        let mut state = OutlierState::default();
        assert_eq!(state.record(Success, T0, &config, allow), Verdict::Stay);
        assert_eq!(state.record(Failure, T0, &config, allow), ejected(1, 10));
    }

    #[test]
    fn an_ejection_by_the_streak_empties_the_window_and_the_call_opens_the_next() {
        let config = OutlierConfig {
            failure_rate: Some(FailureRate {
                threshold_percent: 50,
                minimum_calls: 4,
            }),
            ..config(2, 10, 300)
        };
        let mut state = OutlierState::default();
        // Success, then two failures: the streak ejects with the window at 3 calls.
        assert_eq!(
            feed(&mut state, &config, T0, &[Success, Failure, Failure]),
            ejected(1, 10)
        );
        let back = state.returns_at(T0).expect("ejected");
        // The next window already holds that failure: two successes and a failure fill it at
        // 2 of 4, which ejects.
        let outcomes = [Success, Success, Failure];
        assert_eq!(feed(&mut state, &config, back, &outcomes), ejected(2, 20));
    }

    #[test]
    fn a_success_that_fills_a_failing_window_ejects() {
        let config = rate(50, 4);
        let mut state = OutlierState::default();
        feed(&mut state, &config, T0, &[Failure, Failure, Success]);
        assert_eq!(state.record(Success, T0, &config, allow), ejected(1, 10));
    }

    // === try_record, the lock-free path's side ===

    #[test]
    fn try_record_records_exactly_what_needs_no_cap() {
        // Every state with small counts, every outcome, ejected or not: where `try_record`
        // records, `record` would not have asked the cap and ends in the same state; where it
        // declines, it changed nothing and `record` would have asked (or the endpoint is out).
        let config = OutlierConfig {
            failure_rate: Some(FailureRate {
                threshold_percent: 50,
                minimum_calls: 4,
            }),
            ..config(3, 10, 300)
        };
        for consecutive_failures in 0..3 {
            for window_calls in 0..4 {
                for window_failures in 0..=window_calls {
                    for ejected_until in [0, T0 + SEC] {
                        for outcome in [Success, Failure, Ignored] {
                            let start = OutlierState {
                                consecutive_failures,
                                window_calls,
                                window_failures,
                                times_ejected: u32::from(ejected_until > 0),
                                ejected_until,
                            };
                            let asked = Cell::new(false);
                            let mut recorded = start;
                            recorded.record(outcome, T0, &config, || {
                                asked.set(true);
                                Cap::Allows
                            });
                            let mut tried = start;
                            if tried.try_record(outcome, T0, &config) {
                                assert!(!asked.get(), "{start:?} {outcome:?}");
                                assert_eq!(tried, recorded, "{start:?} {outcome:?}");
                            } else {
                                assert_eq!(tried, start, "{start:?} {outcome:?}");
                                assert!(
                                    asked.get() || start.is_ejected(T0),
                                    "declined needlessly: {start:?} {outcome:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
