//! Sliding windows that answer "what is the failure rate now?" in O(1), without a lock on the
//! record path.
//!
//! Both windows keep running totals and subtract what leaves the window as it leaves, the
//! approach of Resilience4j's sliding windows; neither scans its contents to answer. Where
//! Resilience4j takes a lock per call, these use one atomic word per total.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateConfig;
use crate::policy::{CallRecord, Thresholds, TripPolicy, WindowStats};

// === impl CountWindow ===

/// Bits per total in the count window's packed word.
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// Each packed total is stored offset by `BIAS`, so that a total that dips below zero for an
/// instant (two recorders racing over one slot of a small window: one has swapped its call
/// out before the other has added it in) never borrows from its neighbour. The window size is
/// capped at `MAX_COUNT_WINDOW` (1,000,000 < 2^20), leaving 2^19 of headroom either way.
const BIAS: u64 = 1 << 19;
const EMPTY_TOTALS: u64 = BIAS | (BIAS << FIELD_BITS) | (BIAS << (2 * FIELD_BITS));

const SLOT_CALL: u8 = 1;
const SLOT_FAILED: u8 = 2;
const SLOT_SLOW: u8 = 4;

/// The failure and slow-call rates over the last `n` calls.
///
/// A ring of `n` one-byte slots and one packed word of totals (calls, failures, slow calls).
/// Recording a call is three atomic operations: claim a slot, swap the call into it, and add
/// the difference between the new and the evicted call to the totals, which also yields the
/// new totals to judge without another read.
#[derive(Debug)]
pub(crate) struct CountWindow {
    thresholds: Thresholds,
    slow_call_duration: Option<Duration>,
    cursor: AtomicU64,
    slots: Box<[AtomicU8]>,
    totals: AtomicU64,
}

fn slot_value(call: CallRecord) -> u8 {
    SLOT_CALL | if call.failed { SLOT_FAILED } else { 0 } | if call.slow { SLOT_SLOW } else { 0 }
}

fn contribution(slot: u8) -> u64 {
    if slot == 0 {
        return 0;
    }
    1 | (u64::from((slot & SLOT_FAILED) >> 1) << FIELD_BITS)
        | (u64::from((slot & SLOT_SLOW) >> 2) << (2 * FIELD_BITS))
}

fn unpack(totals: u64) -> (u64, u64, u64) {
    let field = |shift: u32| ((totals >> shift) & FIELD_MASK).saturating_sub(BIAS);
    (field(0), field(FIELD_BITS), field(2 * FIELD_BITS))
}

impl CountWindow {
    /// A window over the last `size` calls judged by `config`'s thresholds.
    pub(crate) fn new(size: u32, config: &RateConfig) -> Self {
        let size = size.clamp(1, crate::config::MAX_COUNT_WINDOW);
        Self {
            thresholds: Thresholds::from_config(config),
            slow_call_duration: config.slow_call_duration,
            cursor: AtomicU64::new(0),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            totals: AtomicU64::new(EMPTY_TOTALS),
        }
    }
}

impl TripPolicy for CountWindow {
    #[inline]
    fn record(&self, call: CallRecord, _now: Instant) -> bool {
        let n = self.slots.len() as u64;
        #[allow(clippy::cast_possible_truncation)] // the index is < n <= MAX_COUNT_WINDOW
        let index = (self.cursor.fetch_add(1, Ordering::Relaxed) % n) as usize;
        let new = slot_value(call);
        let old = self.slots[index].swap(new, Ordering::AcqRel);
        let delta = contribution(new).wrapping_sub(contribution(old));
        let totals = self
            .totals
            .fetch_add(delta, Ordering::AcqRel)
            .wrapping_add(delta);
        if old == new && new == SLOT_CALL {
            // Nothing changed but the ring position: the verdict cannot have changed either.
            return false;
        }
        let (calls, failures, slow) = unpack(totals);
        self.thresholds.trips(calls, failures, slow)
    }

    /// Drains every slot and subtracts what it held, rather than storing zeros: a call being
    /// recorded at the same moment then stays counted exactly once, in its slot and the totals.
    fn reset(&self, _now: Instant) {
        for slot in &*self.slots {
            let old = slot.swap(0, Ordering::AcqRel);
            if old != 0 {
                self.totals
                    .fetch_add(0u64.wrapping_sub(contribution(old)), Ordering::AcqRel);
            }
        }
    }

    fn stats(&self, _now: Instant) -> WindowStats {
        let (calls, failures, slow) = unpack(self.totals.load(Ordering::Acquire));
        self.thresholds.stats(calls, failures, slow)
    }

    fn needs_clock(&self) -> bool {
        false
    }

    fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }
}

// === impl TimeWindow ===

/// Calls in the high half, failures in the low half of a packed word.
const CALL: u64 = 1 << 32;

#[derive(Debug, Default)]
struct Bucket {
    counts: AtomicU64,
    slow: AtomicU64,
}

/// The failure and slow-call rates over the calls of the last `duration`.
///
/// The window is `buckets` equal slices. Recording a call adds it to its slice and to the
/// running totals (two atomic additions, three with a slow call). When time moves into a new
/// slice, the first caller to notice takes a small lock, subtracts the expiring slices from the
/// totals and moves the window on: once per slice length, not per call.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    thresholds: Thresholds,
    slow_call_duration: Option<Duration>,
    origin: Instant,
    bucket_nanos: u64,
    current: AtomicU64,
    buckets: Box<[Bucket]>,
    totals: AtomicU64,
    slow_total: AtomicU64,
    rotation: Mutex<()>,
}

impl TimeWindow {
    /// A window over the last `duration` in `buckets` slices, judged by `config`'s thresholds,
    /// starting at `now`.
    pub(crate) fn new(duration: Duration, buckets: u32, config: &RateConfig, now: Instant) -> Self {
        let buckets = buckets.max(1);
        let bucket_nanos = u64::try_from(duration.as_nanos() / u128::from(buckets))
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            thresholds: Thresholds::from_config(config),
            slow_call_duration: config.slow_call_duration,
            origin: now,
            bucket_nanos,
            current: AtomicU64::new(0),
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            totals: AtomicU64::new(0),
            slow_total: AtomicU64::new(0),
            rotation: Mutex::new(()),
        }
    }

    #[inline]
    fn epoch(&self, now: Instant) -> u64 {
        // u64 nanoseconds last 584 years; a u128 division would cost more than the rest of
        // the record path together.
        let nanos = now.saturating_duration_since(self.origin);
        let nanos = u64::try_from(nanos.as_nanos()).unwrap_or(u64::MAX);
        nanos / self.bucket_nanos
    }

    fn slot(&self, epoch: u64) -> &Bucket {
        #[allow(clippy::cast_possible_truncation)] // the index is < buckets <= MAX_TIME_BUCKETS
        &self.buckets[(epoch % self.buckets.len() as u64) as usize]
    }

    /// Moves the window on to `epoch`, expiring the slices it leaves behind.
    fn advance(&self, epoch: u64) {
        if epoch <= self.current.load(Ordering::Acquire) {
            return;
        }
        let _guard = switchyard_core::sync::lock(&self.rotation);
        let current = self.current.load(Ordering::Acquire);
        if epoch <= current {
            return;
        }
        let n = self.buckets.len() as u64;
        for offset in 1..=(epoch - current).min(n) {
            Self::drain(self.slot(current + offset), &self.totals, &self.slow_total);
        }
        self.current.store(epoch, Ordering::Release);
    }

    /// Empties `bucket` and takes what it held out of the totals.
    fn drain(bucket: &Bucket, totals: &AtomicU64, slow_total: &AtomicU64) {
        let counts = bucket.counts.swap(0, Ordering::AcqRel);
        totals.fetch_sub(counts, Ordering::AcqRel);
        let slow = bucket.slow.swap(0, Ordering::AcqRel);
        slow_total.fetch_sub(slow, Ordering::AcqRel);
    }

    fn totals(&self) -> (u64, u64, u64) {
        let totals = self.totals.load(Ordering::Acquire);
        (
            totals >> 32,
            totals & 0xffff_ffff,
            self.slow_total.load(Ordering::Acquire),
        )
    }
}

impl TripPolicy for TimeWindow {
    #[inline]
    fn record(&self, call: CallRecord, now: Instant) -> bool {
        let epoch = self.epoch(now);
        self.advance(epoch);
        if epoch + (self.buckets.len() as u64) <= self.current.load(Ordering::Acquire) {
            // Finished so late that its slice has already left the window.
            return false;
        }
        // Totals first, bucket second: a rotation subtracts only what a bucket holds, so it can
        // never take away a call the totals have not seen yet (the totals would wrap).
        let bucket = self.slot(epoch);
        let add = CALL | u64::from(call.failed);
        let totals = self
            .totals
            .fetch_add(add, Ordering::AcqRel)
            .wrapping_add(add);
        bucket.counts.fetch_add(add, Ordering::AcqRel);
        let slow = if call.slow {
            let slow = self.slow_total.fetch_add(1, Ordering::AcqRel) + 1;
            bucket.slow.fetch_add(1, Ordering::AcqRel);
            slow
        } else {
            self.slow_total.load(Ordering::Acquire)
        };
        self.thresholds
            .trips(totals >> 32, totals & 0xffff_ffff, slow)
    }

    fn reset(&self, now: Instant) {
        let _guard = switchyard_core::sync::lock(&self.rotation);
        // Drain rather than store zeros, for the same reason as rotation.
        for bucket in &*self.buckets {
            Self::drain(bucket, &self.totals, &self.slow_total);
        }
        self.current.store(
            self.current.load(Ordering::Acquire).max(self.epoch(now)),
            Ordering::Release,
        );
    }

    fn stats(&self, now: Instant) -> WindowStats {
        self.advance(self.epoch(now));
        let (calls, failures, slow) = self.totals();
        self.thresholds.stats(calls, failures, slow)
    }

    fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Trip;

    const FAIL: CallRecord = CallRecord::FAILURE;
    const OK: CallRecord = CallRecord::SUCCESS;
    const SLOW: CallRecord = CallRecord::SLOW_SUCCESS;

    #[test]
    fn count_window_evicts_the_oldest_call() {
        let w = CountWindow::new(4, &Trip::count_window(4, 50.0).with_minimum_calls(4));
        let now = Instant::now();
        assert!(!w.record(FAIL, now));
        for _ in 0..3 {
            assert!(!w.record(OK, now));
        }
        assert_eq!(w.stats(now).failure_rate, Some(25.0));
        // The failure leaves as the fifth call comes in.
        assert!(!w.record(OK, now));
        assert_eq!(w.stats(now).failures, 0);
        assert!(!w.record(FAIL, now));
        assert!(w.record(FAIL, now), "2 of the last 4 failed: 50%");
        w.reset(now);
        assert_eq!(w.stats(now), WindowStats::default());
    }

    #[test]
    fn count_window_counts_slow_calls() {
        let config = Trip::count_window(2, 100.0)
            .with_minimum_calls(2)
            .with_slow_calls(Duration::from_secs(1), 50.0);
        let w = CountWindow::new(2, &config);
        let now = Instant::now();
        assert!(!w.record(OK, now));
        assert!(w.record(SLOW, now));
        assert_eq!(w.stats(now).slow_calls, 1);
    }

    #[test]
    fn packed_totals_survive_a_transient_dip_below_zero() {
        // Subtract a call that was never added (the race the bias absorbs), then add it.
        let totals = AtomicU64::new(EMPTY_TOTALS);
        let failed = contribution(SLOT_CALL | SLOT_FAILED);
        totals.fetch_add(0u64.wrapping_sub(failed), Ordering::AcqRel);
        totals.fetch_add(failed, Ordering::AcqRel);
        assert_eq!(totals.load(Ordering::Acquire), EMPTY_TOTALS);
        assert_eq!(unpack(EMPTY_TOTALS), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_calls_as_their_slice_expires() {
        let start = Instant::now();
        let config = Trip::time_window(Duration::from_secs(10), 60.0).with_minimum_calls(2);
        let w = TimeWindow::new(Duration::from_secs(10), 10, &config, start);
        assert!(!w.record(FAIL, start));
        assert!(!w.record(OK, start + Duration::from_secs(5)));
        assert_eq!(
            w.stats(start + Duration::from_secs(9)).failure_rate,
            Some(50.0)
        );
        // At 10 s the first slice (0..1 s) leaves; the success at 5 s stays.
        let stats = w.stats(start + Duration::from_secs(10));
        assert_eq!((stats.calls, stats.failures), (1, 0));
        // After a long quiet spell everything has gone.
        assert_eq!(w.stats(start + Duration::from_secs(60)).calls, 0);
        assert!(!w.record(FAIL, start + Duration::from_secs(60)));
        assert!(w.record(FAIL, start + Duration::from_secs(61)));
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_drops_a_call_whose_slice_already_left() {
        let start = Instant::now();
        let w = TimeWindow::new(
            Duration::from_secs(1),
            10,
            &Trip::time_window(Duration::from_secs(1), 50.0),
            start,
        );
        w.stats(start + Duration::from_secs(5));
        assert!(!w.record(FAIL, start));
        assert_eq!(w.stats(start + Duration::from_secs(5)).calls, 0);
    }
}
