//! The delay before each retry: pure arithmetic over the config and a random number source, so
//! that sequences are tested exactly with a seeded generator.

use std::time::Duration;

use crate::config::{BackoffConfig, Jitter};

/// The delays before one call's (or one message's) retries, in order: exponential growth from
/// `initial`, at most `max`, randomised by the [`Jitter`].
///
/// Pure: it holds the retry count and the previous delay (which decorrelated jitter grows
/// from), and draws from the random source it is given, so a seeded generator gives an exact
/// sequence. One `Backoff` per call; the source may be shared.
///
/// ```
/// use std::time::Duration;
/// use switchyard_retry::{Backoff, BackoffConfig, Jitter};
///
/// let ms = Duration::from_millis;
/// let mut backoff = Backoff::new(BackoffConfig::new(ms(100), 2.0, ms(300)), Jitter::None);
/// let mut rng = fastrand::Rng::with_seed(7);
/// let delays: Vec<_> = (0..4).map(|_| backoff.next_delay(&mut rng)).collect();
/// assert_eq!(delays, [ms(100), ms(200), ms(300), ms(300)]);
/// assert_eq!(backoff.retries(), 4);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    config: BackoffConfig,
    jitter: Jitter,
    retries: u32,
    previous: Duration,
}

impl Backoff {
    /// The delays of `config` randomised by `jitter`, before the first retry. The config is
    /// taken as given: its owner validates it ([`BackoffConfig::validate`]).
    pub fn new(config: BackoffConfig, jitter: Jitter) -> Self {
        Self {
            config,
            jitter,
            retries: 0,
            previous: config.initial,
        }
    }

    /// The delay before the next retry, drawing from `rng` (not at all under
    /// [`Jitter::None`]).
    pub fn next_delay(&mut self, rng: &mut fastrand::Rng) -> Duration {
        self.retries = self.retries.saturating_add(1);
        let delay = delay(&self.config, self.jitter, self.retries, self.previous, rng);
        self.previous = delay;
        delay
    }

    /// The delays drawn so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The config the delays grow by.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }
}

/// The delay before retry number `retry` (1 for the first retry), given the delay before the
/// previous one (`initial` before the first), drawing randomness from `rng`.
fn delay(
    backoff: &BackoffConfig,
    jitter: Jitter,
    retry: u32,
    previous: Duration,
    rng: &mut fastrand::Rng,
) -> Duration {
    let base = exponential(backoff, retry);
    match jitter {
        Jitter::None => base,
        Jitter::Full => uniform(rng, Duration::ZERO, base),
        Jitter::Equal => {
            let half = base / 2;
            uniform(rng, half, base)
        }
        Jitter::Decorrelated => {
            let upper = previous.saturating_mul(3).min(backoff.max);
            uniform(rng, backoff.initial.min(upper), upper)
        }
    }
}

/// `initial × multiplier^(retry-1)`, at most `max`.
fn exponential(backoff: &BackoffConfig, retry: u32) -> Duration {
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = backoff.initial.as_secs_f64() * backoff.multiplier.powi(exponent);
    if secs.is_finite() && secs < backoff.max.as_secs_f64() {
        Duration::from_secs_f64(secs)
    } else {
        backoff.max
    }
}

/// Uniform in `[low, high]`, to the nanosecond.
fn uniform(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let span = u64::try_from(high.saturating_sub(low).as_nanos()).unwrap_or(u64::MAX);
    low + Duration::from_nanos(rng.u64(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backoff() -> BackoffConfig {
        BackoffConfig::new(ms(100), 2.0, ms(1000))
    }

    #[test]
    fn without_jitter_the_delay_grows_by_the_multiplier_up_to_max() {
        let mut rng = fastrand::Rng::with_seed(1);
        let delays: Vec<_> = (1..=6)
            .map(|n| delay(&backoff(), Jitter::None, n, ms(100), &mut rng))
            .collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn a_huge_retry_number_stays_at_max() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            delay(&backoff(), Jitter::None, u32::MAX, ms(100), &mut rng),
            ms(1000)
        );
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_delay() {
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..=5 {
            let base = delay(&backoff(), Jitter::None, retry, ms(100), &mut rng);
            for _ in 0..1000 {
                let d = delay(&backoff(), Jitter::Full, retry, ms(100), &mut rng);
                assert!(d <= base, "{d:?} > {base:?}");
            }
        }
    }

    #[test]
    fn equal_jitter_stays_within_half_the_delay_and_the_delay() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let d = delay(&backoff(), Jitter::Equal, 3, ms(100), &mut rng);
            assert!((ms(200)..=ms(400)).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn decorrelated_jitter_stays_within_initial_and_three_times_the_previous_delay() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut previous = ms(100);
        for _ in 0..1000 {
            let d = delay(&backoff(), Jitter::Decorrelated, 1, previous, &mut rng);
            assert!(d >= ms(100) && d <= (previous * 3).min(ms(1000)), "{d:?}");
            previous = d;
        }
    }

    #[test]
    fn jitter_spreads_delays_over_its_range() {
        // Full jitter over [0, 400ms]: each quarter of the range gets about a quarter of the
        // draws (bounds far beyond the binomial spread of 2,000 draws).
        let mut rng = fastrand::Rng::with_seed(42);
        let mut quarters = [0u32; 4];
        for _ in 0..2000 {
            let d = delay(&backoff(), Jitter::Full, 3, ms(100), &mut rng);
            let q = usize::try_from(d.as_millis() / 100).unwrap_or(3).min(3);
            quarters[q] += 1;
        }
        for count in quarters {
            assert!((400..=600).contains(&count), "{quarters:?}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_sequence() {
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (1..=5)
                .map(|n| delay(&backoff(), Jitter::Full, n, ms(100), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }

    #[test]
    fn a_backoff_walks_the_same_sequence_as_the_delays_it_is_made_of() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let mut by_hand = fastrand::Rng::with_seed(3);
            let mut previous = ms(100);
            let expected: Vec<_> = (1..=8)
                .map(|n| {
                    previous = delay(&backoff(), jitter, n, previous, &mut by_hand);
                    previous
                })
                .collect();
            let mut rng = fastrand::Rng::with_seed(3);
            let mut walked = Backoff::new(backoff(), jitter);
            let got: Vec<_> = (0..8).map(|_| walked.next_delay(&mut rng)).collect();
            assert_eq!(got, expected, "{jitter:?}");
            assert_eq!(walked.retries(), 8);
        }
    }

    #[test]
    fn a_constant_backoff_without_jitter_is_the_same_pause_each_time() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut constant = Backoff::new(BackoffConfig::constant(ms(50)), Jitter::None);
        let delays: Vec<_> = (0..5).map(|_| constant.next_delay(&mut rng)).collect();
        assert_eq!(delays, [ms(50); 5]);
    }
}
