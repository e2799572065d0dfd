//! The breaker's state machine: pure and synchronous, with `now` passed in.
//!
//! [`Circuit`] knows nothing of services or clocks. It answers two questions, "may this call
//! go through?" ([`Circuit::acquire`]) and "this admitted call ended so; what now?"
//! ([`Circuit::record`]), and tells an observer about every transition. The service is a thin
//! adapter that asks the first question in `poll_ready` and the second when the response
//! future resolves.
//!
//! # Concurrency
//!
//! The whole state is one atomic word, `epoch << 3 | state`. A closed breaker admits a call
//! with one atomic load, and the [`TripPolicy`] records it with a few atomic operations.
//! Transitions are rare, and they alone take a mutex, re-checking under it that the word has
//! not moved. Every transition bumps the epoch, and each permit remembers the epoch it was
//! issued in, so an outcome that arrives after the breaker has moved on (a call admitted while
//! closed that fails after the breaker reopened, a probe from a half-open spell that timed
//! out) is recognised as stale and not counted.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::Outcome;
use tokio::time::Instant;

use crate::config::CircuitBreakerConfig;
use crate::policy::{CallRecord, Policy, WindowStats};

// === impl BreakerState: the states and their packed word ===

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes feed the trip policy.
    Closed,
    /// Calls are refused until the open wait ends.
    Open,
    /// A limited number of probe calls test whether the backend recovered.
    HalfOpen,
    /// Held open from outside (a handle, a health monitor) until released.
    ForcedOpen,
    /// Held closed from outside: every call flows and nothing trips, until released.
    ForcedClosed,
}

impl BreakerState {
    const ALL: [Self; 5] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::ForcedOpen,
        Self::ForcedClosed,
    ];

    /// A stable snake_case name, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
        }
    }

    /// The value of the `switchyard_breaker_state` gauge for this state.
    pub const fn as_gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
            Self::ForcedOpen => 3.0,
            Self::ForcedClosed => 4.0,
        }
    }

    /// Whether calls are refused outright in this state.
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Open | Self::ForcedOpen)
    }

    const fn code(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
            Self::ForcedOpen => 3,
            Self::ForcedClosed => 4,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const STATE_BITS: u32 = 3;

fn pack(epoch: u64, state: BreakerState) -> u64 {
    (epoch << STATE_BITS) | state.code()
}

fn unpack(word: u64) -> (u64, BreakerState) {
    #[allow(clippy::cast_possible_truncation)] // masked to 3 bits
    let code = (word & ((1 << STATE_BITS) - 1)) as usize;
    (word >> STATE_BITS, BreakerState::ALL[code])
}

/// Aligns its content to its own cache line (128 bytes covers adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A state change, as the observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: BreakerState,
    pub(crate) to: BreakerState,
    pub(crate) at: Instant,
}

fn nanos_of(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX)
}

// === Permit and Refusal ===

/// The right to make one call, issued by [`Circuit::acquire`]: the epoch it was issued in and
/// whether it is a half-open probe, packed in one non-zero word so that `Option<Permit>` is a
/// single word too (it travels in every response future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit(NonZeroU64);

impl Permit {
    #[inline]
    fn new(epoch: u64, probe: bool) -> Self {
        // Bit 0 is always set (non-zero), bit 1 marks a probe, the rest is the epoch.
        Self(NonZeroU64::MIN | ((epoch << 2) | (u64::from(probe) << 1)))
    }

    #[inline]
    fn epoch(self) -> u64 {
        self.0.get() >> 2
    }

    #[inline]
    pub(crate) fn is_probe(self) -> bool {
        self.0.get() & 2 != 0
    }
}

/// A refused call: when to try again, if the breaker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// When the breaker lets probes through, if it knows (open, not forced).
    pub(crate) retry_after: Option<Duration>,
    /// When the breaker will change its mind by itself even though it cannot promise a slot:
    /// the end of a half-open spell that `max_wait_in_half_open` bounds. A waiter in
    /// backpressure mode must wake then, or a hung probe would strand it.
    pub(crate) recheck_in: Option<Duration>,
}

// === impl Circuit: the state machine ===

#[derive(Debug)]
struct Settings {
    wait_in_open: Duration,
    multiplier: f64,
    max_wait_in_open: Duration,
    permitted_probes: u64,
    successes_to_close: u32,
    max_wait_in_half_open: Option<Duration>,
}

/// What only transitions touch, behind the mutex.
#[derive(Debug)]
struct Slow {
    current_wait: Duration,
    probe_successes: u32,
}

pub(crate) type Observer = Box<dyn Fn(&Transition) + Send + Sync>;

/// The state machine shared by every clone of one breaker.
pub(crate) struct Circuit {
    /// `epoch << 3 | state`. On a cache line of its own: every call reads it, and without the
    /// padding it would share a line with the `Arc`'s reference count, which every call
    /// writes, so two threads would keep stealing the line from each other.
    word: CachePadded<AtomicU64>,
    /// `epoch << 32 | probes in flight` for the half-open spell of that epoch.
    probes: AtomicU64,
    /// Open: when the wait ends. Half-open: when the spell gives up. In nanoseconds since
    /// `origin`; `u64::MAX` for never.
    deadline: AtomicU64,
    opened: AtomicU64,
    origin: Instant,
    policy: Policy,
    settings: Settings,
    slow: Mutex<Slow>,
    observer: Observer,
}

impl fmt::Debug for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Circuit")
            .field("state", &self.state())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Circuit {
    /// A closed circuit. `config` must have been validated.
    pub(crate) fn new(
        config: &CircuitBreakerConfig,
        policy: Policy,
        observer: Observer,
        now: Instant,
    ) -> Self {
        Self {
            word: CachePadded(AtomicU64::new(pack(0, BreakerState::Closed))),
            probes: AtomicU64::new(0),
            deadline: AtomicU64::new(u64::MAX),
            opened: AtomicU64::new(0),
            origin: now,
            policy,
            settings: Settings {
                wait_in_open: config.wait_in_open,
                multiplier: config.wait_in_open_multiplier,
                max_wait_in_open: config.max_wait_in_open,
                permitted_probes: u64::from(config.permitted_calls_in_half_open),
                successes_to_close: config.successes_to_close,
                max_wait_in_half_open: config.max_wait_in_half_open,
            },
            slow: Mutex::new(Slow {
                current_wait: config.wait_in_open,
                probe_successes: 0,
            }),
            observer,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        unpack(self.word.load(Ordering::Acquire)).1
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The deadline `wait` after `now`, in `nanos`; `u64::MAX` (never) if it overflows.
    fn deadline_after(&self, now: Instant, wait: Duration) -> u64 {
        self.nanos(now).saturating_add(nanos_of(wait))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slow> {
        // The guarded data holds plain counters that are valid at every step.
        switchyard_core::sync::lock(&self.slow)
    }

    /// May a call go through now? `now` is read only when the breaker is not closed.
    #[inline]
    pub(crate) fn acquire(&self, now: impl Fn() -> Instant) -> Result<Permit, Refusal> {
        let word = self.word.load(Ordering::Acquire);
        match unpack(word) {
            (epoch, BreakerState::Closed | BreakerState::ForcedClosed) => {
                Ok(Permit::new(epoch, false))
            }
            _ => self.acquire_slow(word, now()),
        }
    }

    #[cold]
    fn acquire_slow(&self, mut word: u64, now: Instant) -> Result<Permit, Refusal> {
        loop {
            let (epoch, state) = unpack(word);
            match state {
                BreakerState::Closed | BreakerState::ForcedClosed => {
                    return Ok(Permit::new(epoch, false));
                }
                BreakerState::ForcedOpen => return Err(self.refuse(None)),
                BreakerState::Open => {
                    let deadline = self.deadline.load(Ordering::Acquire);
                    let at = self.nanos(now);
                    if self.word.load(Ordering::Acquire) != word {
                        // The deadline read may belong to the next state: read both again.
                    } else if at < deadline {
                        // `u64::MAX` is a wait too long to express: no hint then.
                        let retry_after =
                            (deadline != u64::MAX).then(|| Duration::from_nanos(deadline - at));
                        return Err(self.refuse(retry_after));
                    } else {
                        self.transition_from(word, BreakerState::HalfOpen, now);
                    }
                }
                BreakerState::HalfOpen => {
                    let (at, deadline) = (self.nanos(now), self.deadline.load(Ordering::Acquire));
                    if self.word.load(Ordering::Acquire) != word {
                        // As above: the deadline may not be this spell's.
                    } else if at >= deadline {
                        // No verdict in time: a probe hung or never came. Reopen.
                        self.reopen_expired(word, now);
                    } else if self.claim_probe(epoch) {
                        let permit = Permit::new(epoch, true);
                        if self.word.load(Ordering::Acquire) == word {
                            return Ok(permit);
                        }
                        // The spell ended while the slot was claimed: this probe would go
                        // through a breaker that has moved on. Give it back and look again.
                        self.release_probe(permit);
                    } else {
                        return Err(Refusal {
                            retry_after: None,
                            recheck_in: (deadline != u64::MAX)
                                .then(|| Duration::from_nanos(deadline - at)),
                        });
                    }
                }
            }
            word = self.word.load(Ordering::Acquire);
        }
    }

    fn refuse(&self, retry_after: Option<Duration>) -> Refusal {
        Refusal {
            retry_after,
            recheck_in: None,
        }
    }

    fn claim_probe(&self, epoch: u64) -> bool {
        let permitted = self.settings.permitted_probes;
        self.probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |probes| {
                let in_flight = if probes >> 32 == epoch & 0xffff_ffff {
                    probes & 0xffff_ffff
                } else {
                    0
                };
                (in_flight < permitted).then_some(((epoch & 0xffff_ffff) << 32) | (in_flight + 1))
            })
            .is_ok()
    }

    fn release_probe(&self, permit: Permit) {
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |probes| {
                (probes >> 32 == permit.epoch() & 0xffff_ffff && probes & 0xffff_ffff > 0)
                    .then(|| probes - 1)
            });
    }

    /// Gives back a permit whose call never ran or was cancelled: nothing is recorded, and a
    /// probe slot is freed for another caller.
    #[inline]
    pub(crate) fn cancel(&self, permit: Permit) -> bool {
        if permit.is_probe() {
            self.release_probe(permit);
        }
        permit.is_probe()
    }

    /// Records how an admitted call ended. `now` is read only when the policy needs the
    /// clock or the breaker changes state.
    #[inline]
    pub(crate) fn record(
        &self,
        permit: Permit,
        outcome: Outcome,
        slow: bool,
        now: impl Fn() -> Instant,
    ) {
        let failed = match outcome {
            Outcome::Ignored => {
                self.cancel(permit);
                return;
            }
            Outcome::Failure => true,
            Outcome::Success => false,
        };
        let word = self.word.load(Ordering::Acquire);
        if permit.is_probe() {
            self.release_probe(permit);
            if word != pack(permit.epoch(), BreakerState::HalfOpen) {
                return;
            }
            let now = now();
            let mut guard = self.lock();
            if self.word.load(Ordering::Acquire) != word {
                return;
            }
            if failed || slow {
                self.transition_locked(&mut guard, word, BreakerState::Open, now);
            } else {
                guard.probe_successes += 1;
                if guard.probe_successes >= self.settings.successes_to_close {
                    self.transition_locked(&mut guard, word, BreakerState::Closed, now);
                }
            }
        } else if word == pack(permit.epoch(), BreakerState::Closed) {
            let at = if self.policy.needs_clock() {
                now()
            } else {
                self.origin
            };
            if self.policy.record(CallRecord { failed, slow }, at) {
                self.transition_from(word, BreakerState::Open, now());
            }
        }
    }

    /// Moves from the state in `word` to `to`, unless another transition got there first.
    fn transition_from(&self, word: u64, to: BreakerState, now: Instant) {
        let mut guard = self.lock();
        if self.word.load(Ordering::Acquire) == word {
            self.transition_locked(&mut guard, word, to, now);
        }
    }

    /// The half-open spell in `word` ran out without a verdict (a probe hung or never came):
    /// reopen for the same wait, counted from when the spell ended rather than from when
    /// someone noticed, so the schedule does not depend on traffic.
    fn reopen_expired(&self, word: u64, now: Instant) {
        let guard = self.lock();
        if self.word.load(Ordering::Acquire) != word {
            return;
        }
        let ended = self.deadline.load(Ordering::Acquire);
        self.deadline.store(
            ended.saturating_add(nanos_of(guard.current_wait)),
            Ordering::Release,
        );
        self.publish(word, BreakerState::Open, now);
    }

    fn transition_locked(&self, slow: &mut Slow, word: u64, to: BreakerState, now: Instant) {
        let from = unpack(word).1;
        match to {
            BreakerState::Open => {
                let wait = if from == BreakerState::HalfOpen {
                    // A probe failed: the backend is still sick, wait longer. Saturates
                    // instead of panicking on a huge multiplier or wait.
                    Duration::try_from_secs_f64(
                        slow.current_wait.as_secs_f64() * self.settings.multiplier,
                    )
                    .unwrap_or(Duration::MAX)
                    .min(self.settings.max_wait_in_open)
                } else {
                    self.settings.wait_in_open
                };
                slow.current_wait = wait;
                self.deadline.store(
                    self.nanos(now).saturating_add(nanos_of(wait)),
                    Ordering::Release,
                );
            }
            BreakerState::HalfOpen => {
                slow.probe_successes = 0;
                let deadline = self
                    .settings
                    .max_wait_in_half_open
                    .map_or(u64::MAX, |max| self.deadline_after(now, max));
                self.deadline.store(deadline, Ordering::Release);
            }
            BreakerState::Closed => {
                self.policy.reset(now);
                slow.current_wait = self.settings.wait_in_open;
                self.deadline.store(u64::MAX, Ordering::Release);
            }
            BreakerState::ForcedOpen | BreakerState::ForcedClosed => {
                self.deadline.store(u64::MAX, Ordering::Release);
            }
        }
        self.publish(word, to, now);
    }

    /// Makes the move from `word` to `to` visible and tells the observer. Runs under the
    /// transition lock, so observers see transitions in the order they happened.
    fn publish(&self, word: u64, to: BreakerState, now: Instant) {
        let (epoch, from) = unpack(word);
        if to == BreakerState::Open {
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        self.word.store(pack(epoch + 1, to), Ordering::Release);
        (self.observer)(&Transition { from, to, at: now });
    }

    /// Whether `permit` may still be used: `call` can come long after `poll_ready` (an inner
    /// service that was slow to be ready, a readied service parked in a balancer's cache),
    /// and the breaker may have opened since.
    #[inline]
    pub(crate) fn admits(&self, permit: Permit) -> bool {
        match unpack(self.word.load(Ordering::Acquire)) {
            (_, BreakerState::Closed | BreakerState::ForcedClosed) => true,
            (epoch, BreakerState::HalfOpen) => permit.is_probe() && permit.epoch() == epoch,
            (_, BreakerState::Open | BreakerState::ForcedOpen) => false,
        }
    }

    /// Moves to `to` from whatever state the breaker is in (handle operations). Entering
    /// `Closed` forgets every recorded call, even from `Closed`.
    pub(crate) fn force(&self, to: BreakerState, now: Instant) {
        let mut guard = self.lock();
        let word = self.word.load(Ordering::Acquire);
        if unpack(word).1 == to && to != BreakerState::Closed {
            return;
        }
        if unpack(word).1 == BreakerState::Closed && to == BreakerState::Closed {
            self.policy.reset(now);
            return;
        }
        self.transition_locked(&mut guard, word, to, now);
    }

    /// Leaves a forced state for `Closed`; does nothing in the automatic states.
    pub(crate) fn release(&self, now: Instant) {
        let mut guard = self.lock();
        let word = self.word.load(Ordering::Acquire);
        if matches!(
            unpack(word).1,
            BreakerState::ForcedOpen | BreakerState::ForcedClosed
        ) {
            self.transition_locked(&mut guard, word, BreakerState::Closed, now);
        }
    }

    /// How long until an open breaker lets probes through.
    pub(crate) fn open_remaining(&self, now: Instant) -> Option<Duration> {
        (self.state() == BreakerState::Open).then(|| {
            Duration::from_nanos(
                self.deadline
                    .load(Ordering::Acquire)
                    .saturating_sub(self.nanos(now)),
            )
        })
    }

    /// The counters behind a handle's snapshot: the policy's, and how often it opened.
    pub(crate) fn counters(&self, now: Instant) -> (WindowStats, u64) {
        (self.policy.stats(now), self.opened.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Trip;
    use crate::policy::Policy;

    struct Fixture {
        circuit: Circuit,
        seen: Arc<Mutex<Vec<(BreakerState, BreakerState)>>>,
        start: Instant,
    }

    fn circuit(config: &CircuitBreakerConfig) -> Fixture {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let start = Instant::now();
        let circuit = Circuit::new(
            config,
            Policy::from_config(&config.trip),
            Box::new(move |t| log.lock().unwrap().push((t.from, t.to))),
            start,
        );
        Fixture {
            circuit,
            seen,
            start,
        }
    }

    impl Fixture {
        fn at(&self, ms: u64) -> impl Fn() -> Instant + use<> {
            let t = self.start + Duration::from_millis(ms);
            move || t
        }
        fn call(&self, ms: u64, outcome: Outcome) -> Result<(), Refusal> {
            let permit = self.circuit.acquire(self.at(ms))?;
            self.circuit.record(permit, outcome, false, self.at(ms));
            Ok(())
        }
        fn transitions(&self) -> Vec<(BreakerState, BreakerState)> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn seed() -> CircuitBreakerConfig {
        CircuitBreakerConfig::new(Trip::consecutive_failures(2))
            .with_wait_in_open(Duration::from_millis(100))
    }

    #[tokio::test(start_paused = true)]
    async fn runs_the_full_cycle_closed_open_half_open_closed() {
        let f = circuit(&seed());
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        assert_eq!(f.circuit.state(), BreakerState::Open);
        let refusal = f.call(40, Outcome::Success).unwrap_err();
        assert_eq!(refusal.retry_after, Some(Duration::from_millis(60)));
        // The wait is over: the first caller turns the breaker half-open and probes.
        f.call(100, Outcome::Success).unwrap();
        assert_eq!(f.circuit.state(), BreakerState::HalfOpen);
        f.call(101, Outcome::Success).unwrap();
        assert_eq!(f.circuit.state(), BreakerState::Closed);
        assert_eq!(
            f.transitions(),
            vec![
                (BreakerState::Closed, BreakerState::Open),
                (BreakerState::Open, BreakerState::HalfOpen),
                (BreakerState::HalfOpen, BreakerState::Closed)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_with_a_growing_wait() {
        let f = circuit(&seed().with_exponential_open_wait(2.0, Duration::from_millis(300)));
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        f.call(100, Outcome::Failure).unwrap();
        assert_eq!(
            f.circuit.open_remaining(f.at(100)()),
            Some(Duration::from_millis(200))
        );
        f.call(300, Outcome::Failure).unwrap();
        assert_eq!(
            f.circuit.open_remaining(f.at(300)()),
            Some(Duration::from_millis(300)),
            "capped"
        );
        // Closing resets the wait.
        f.call(600, Outcome::Success).unwrap();
        f.call(600, Outcome::Success).unwrap();
        assert_eq!(f.circuit.state(), BreakerState::Closed);
        f.call(600, Outcome::Failure).unwrap();
        f.call(600, Outcome::Failure).unwrap();
        assert_eq!(
            f.circuit.open_remaining(f.at(600)()),
            Some(Duration::from_millis(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_only_the_permitted_probes() {
        let f = circuit(&seed().with_half_open(2, 2));
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        let a = f.circuit.acquire(f.at(100)).unwrap();
        let b = f.circuit.acquire(f.at(100)).unwrap();
        assert!(a.is_probe() && b.is_probe());
        assert!(f.circuit.acquire(f.at(100)).is_err());
        // A cancelled probe gives its slot back.
        f.circuit.cancel(a);
        let c = f.circuit.acquire(f.at(100)).unwrap();
        f.circuit.record(b, Outcome::Success, false, f.at(101));
        f.circuit.record(c, Outcome::Success, false, f.at(101));
        assert_eq!(f.circuit.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_cannot_wedge_the_breaker() {
        let f = circuit(&seed().with_max_wait_in_half_open(Duration::from_millis(50)));
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        let hung = f.circuit.acquire(f.at(100)).unwrap();
        assert!(f.circuit.acquire(f.at(120)).is_err());
        // 50 ms without a verdict: back to open, for the same (not a grown) wait.
        assert!(f.circuit.acquire(f.at(150)).is_err());
        assert_eq!(f.circuit.state(), BreakerState::Open);
        assert_eq!(
            f.circuit.open_remaining(f.at(150)()),
            Some(Duration::from_millis(100))
        );
        // The next half-open spell has a fresh probe slot although the hung probe never ended.
        let probe = f.circuit.acquire(f.at(250)).unwrap();
        assert!(probe.is_probe());
        // When the hung probe finally fails, it belongs to an old spell and changes nothing.
        f.circuit.record(hung, Outcome::Failure, false, f.at(251));
        assert_eq!(f.circuit.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_failing_after_its_spell_ran_out_still_grows_the_wait() {
        let f = circuit(
            &seed()
                .with_exponential_open_wait(2.0, Duration::from_secs(10))
                .with_max_wait_in_half_open(Duration::from_millis(50)),
        );
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        let probe = f.circuit.acquire(f.at(100)).unwrap();
        // The probe fails at 160 ms, after the spell's 150 ms deadline, before anyone noticed
        // the deadline: a real failure, so the wait doubles from now.
        f.circuit.record(probe, Outcome::Failure, false, f.at(160));
        assert_eq!(f.circuit.state(), BreakerState::Open);
        assert_eq!(
            f.circuit.open_remaining(f.at(160)()),
            Some(Duration::from_millis(200))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_is_void_once_the_breaker_has_moved_on() {
        let f = circuit(&seed());
        let closed = f.circuit.acquire(f.at(0)).unwrap();
        assert!(f.circuit.admits(closed));
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        assert!(!f.circuit.admits(closed), "open");
        let probe = f.circuit.acquire(f.at(100)).unwrap();
        assert!(f.circuit.admits(probe));
        assert!(
            !f.circuit.admits(closed),
            "half-open admits only its probes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_from_a_previous_spell_are_not_counted() {
        let f = circuit(&seed());
        let early = f.circuit.acquire(f.at(0)).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        f.call(0, Outcome::Failure).unwrap();
        f.call(100, Outcome::Success).unwrap();
        f.call(100, Outcome::Success).unwrap();
        assert_eq!(f.circuit.state(), BreakerState::Closed);
        f.call(100, Outcome::Failure).unwrap();
        // A failure of a call admitted before the trip does not count in the new closed spell.
        f.circuit.record(early, Outcome::Failure, false, f.at(100));
        assert_eq!(f.circuit.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_states_hold_until_released() {
        let f = circuit(&seed());
        f.circuit.force(BreakerState::ForcedOpen, f.at(0)());
        assert_eq!(
            f.call(1_000_000, Outcome::Success).unwrap_err().retry_after,
            None
        );
        f.circuit.release(f.at(1)());
        assert_eq!(f.circuit.state(), BreakerState::Closed);
        f.circuit.force(BreakerState::ForcedClosed, f.at(2)());
        for _ in 0..10 {
            f.call(3, Outcome::Failure).unwrap();
        }
        assert_eq!(f.circuit.state(), BreakerState::ForcedClosed);
        f.circuit.release(f.at(4)());
        f.call(5, Outcome::Failure).unwrap();
        assert_eq!(
            f.circuit.state(),
            BreakerState::Closed,
            "the run restarted at release"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_outcomes_move_nothing() {
        let f = circuit(&seed());
        f.call(0, Outcome::Failure).unwrap();
        for _ in 0..5 {
            f.call(0, Outcome::Ignored).unwrap();
        }
        assert_eq!(f.circuit.counters(f.at(0)()).0.failures, 1);
        f.call(0, Outcome::Failure).unwrap();
        assert_eq!(f.circuit.state(), BreakerState::Open);
    }
}
