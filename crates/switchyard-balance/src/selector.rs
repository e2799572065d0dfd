//! Selectors: how one endpoint is picked among the eligible ones.
//!
//! A [`Selector`] is consulted when the eligible set changes (an endpoint added, removed,
//! enabled, disabled, ejected, returned, or its health changed) and builds a [`Pick`] for that
//! set, doing any precomputation there (prefix sums, a hash ring, priority tiers). A call then
//! costs one [`Pick::pick`], O(1) or O(log n) for every built-in strategy.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::endpoint::EndpointView;

/// What a call tells the balancer about itself: a key to route on, endpoints to prefer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// The key `consistent-hash` routes on (a user id, a session, an ordering key).
    pub key: Option<String>,
    /// Endpoints to prefer, by name, in order: the first eligible one is picked, whatever the
    /// strategy.
    pub preferred: Vec<String>,
}

impl Hint {
    /// The hint an `http::Request` carries as an extension, for
    /// [`Balance::with_hint`](crate::Balance::with_hint):
    /// `Balance::new(..).with_hint(Hint::from_extensions)`; a caller inserts a `Hint` into the
    /// request's extensions, so the hint travels with the call.
    pub fn from_extensions<B>(req: &http::Request<B>) -> Option<Self> {
        req.extensions().get::<Self>().cloned()
    }

    /// A hint with a key.
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            preferred: Vec::new(),
        }
    }
}

/// A lock-free, seedable random source shared by a balancer's calls (splitmix64 over an atomic
/// counter): one atomic add per draw, and a seeded balancer picks the same sequence every run.
#[derive(Debug)]
pub struct Rng {
    state: AtomicU64,
}

impl Rng {
    /// A source seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`).
    pub fn below(&self, n: usize) -> usize {
        debug_assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift: no division, bias below 2^-32 for any n < 2^32.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// What a pick is given besides the eligible endpoints.
#[derive(Debug)]
#[non_exhaustive]
pub struct PickContext<'a> {
    /// The call's hint.
    pub hint: Option<&'a Hint>,
    /// The balancer's random source.
    pub rng: &'a Rng,
    /// Now, in nanoseconds since the balancer's epoch (the time base of the endpoints'
    /// latency estimates).
    pub now: u64,
}

impl<'a> PickContext<'a> {
    /// A context, for calling a [`Pick`] outside a balancer (tests, benchmarks).
    pub fn new(hint: Option<&'a Hint>, rng: &'a Rng, now: u64) -> Self {
        Self { hint, rng, now }
    }
}

/// A strategy's precomputed state for one eligible set.
pub trait Pick: Send + Sync + fmt::Debug {
    /// The index in `eligible` (never empty) of the endpoint to call, or `None` for none.
    fn pick(&self, eligible: &[Arc<EndpointView>], cx: &PickContext<'_>) -> Option<usize>;
}

/// A load-balancing strategy: builds a [`Pick`] for each eligible set. User-extensible.
pub trait Selector: Send + Sync + fmt::Debug + 'static {
    /// The pick for `eligible` (never empty).
    fn build(&self, eligible: &[Arc<EndpointView>]) -> Box<dyn Pick>;
}

/// The built-in strategies, by their config (serde) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// In turn.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Fewest calls in flight, by the power of two choices (two random endpoints, the less
    /// loaded one), as Envoy's least-request: O(1), and no herd on the single least loaded.
    LeastConnections,
    /// Lowest peak-EWMA latency weighted by calls in flight, by the power of two choices (the
    /// cost tower's `PeakEwma` uses).
    LeastLatency,
    /// At random in proportion to weight (prefix sums, binary search).
    WeightedRandom,
    /// By the hint's key on a hash ring with 100 virtual nodes per unit of weight: adding or
    /// removing one of N endpoints moves about 1/N of the keys. Calls without a key go round
    /// robin.
    ConsistentHash,
    /// Round robin within the highest priority tier that has an eligible endpoint; a tier
    /// whose endpoints are all ineligible falls to the next.
    Priority,
}

impl Strategy {
    /// The selector implementing this strategy.
    pub fn selector(self) -> Arc<dyn Selector> {
        match self {
            Self::RoundRobin => Arc::new(RoundRobin::default()),
            Self::Random => Arc::new(Random),
            Self::LeastConnections => Arc::new(LeastConnections),
            Self::LeastLatency => Arc::new(LeastLatency),
            Self::WeightedRandom => Arc::new(WeightedRandom),
            Self::ConsistentHash => Arc::new(ConsistentHash::default()),
            Self::Priority => Arc::new(Priority::default()),
        }
    }
}

/// `round-robin`. Its turn counter outlives rebuilds of the eligible set, so frequent changes
/// do not favour the first endpoint.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Turn {
    next: Arc<AtomicUsize>,
}

impl Pick for Turn {
    fn pick(&self, eligible: &[Arc<EndpointView>], _cx: &PickContext<'_>) -> Option<usize> {
        Some(self.next.fetch_add(1, Ordering::Relaxed) % eligible.len())
    }
}

impl Selector for RoundRobin {
    fn build(&self, _eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        Box::new(Turn {
            next: Arc::clone(&self.next),
        })
    }
}

/// `random`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

#[derive(Debug)]
struct Uniform;

impl Pick for Uniform {
    fn pick(&self, eligible: &[Arc<EndpointView>], cx: &PickContext<'_>) -> Option<usize> {
        Some(cx.rng.below(eligible.len()))
    }
}

impl Selector for Random {
    fn build(&self, _eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        Box::new(Uniform)
    }
}

/// Two distinct random indices (the same one twice when there is only one).
fn two(cx: &PickContext<'_>, n: usize) -> (usize, usize) {
    let a = cx.rng.below(n);
    if n == 1 {
        return (a, a);
    }
    let b = (a + 1 + cx.rng.below(n - 1)) % n;
    (a, b)
}

/// `least-connections`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastConnections;

#[derive(Debug)]
struct FewestInFlight;

impl Pick for FewestInFlight {
    fn pick(&self, eligible: &[Arc<EndpointView>], cx: &PickContext<'_>) -> Option<usize> {
        let (a, b) = two(cx, eligible.len());
        Some(if eligible[b].in_flight() < eligible[a].in_flight() {
            b
        } else {
            a
        })
    }
}

impl Selector for LeastConnections {
    fn build(&self, _eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        Box::new(FewestInFlight)
    }
}

/// `least-latency`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLatency;

#[derive(Debug)]
struct LowestCost;

/// The latency an endpoint is assumed to have before its first response: it makes calls in
/// flight count from the start (a hung new endpoint is not "free").
pub const DEFAULT_RTT: std::time::Duration = std::time::Duration::from_millis(10);

/// How fast a latency estimate forgets, both when a sample arrives and when it is read: an
/// estimate not refreshed by a call decays, so an endpoint that had one slow spike gets tried
/// again (as tower's `PeakEwma`).
pub(crate) const DECAY: std::time::Duration = std::time::Duration::from_secs(10);

/// The peak-EWMA cost: the latency estimate, decayed since its last sample, × (calls in
/// flight + 1).
fn cost(endpoint: &EndpointView, now: u64) -> u128 {
    let estimate = match endpoint.ewma_ns.load(Ordering::Relaxed) {
        0 => DEFAULT_RTT.as_nanos() as f64,
        ns => {
            let since = now.saturating_sub(endpoint.ewma_at.load(Ordering::Relaxed));
            ns as f64 * (-(since as f64) / DECAY.as_nanos() as f64).exp()
        }
    };
    (estimate as u128).max(1) * (u128::from(endpoint.in_flight()) + 1)
}

impl Pick for LowestCost {
    fn pick(&self, eligible: &[Arc<EndpointView>], cx: &PickContext<'_>) -> Option<usize> {
        let (a, b) = two(cx, eligible.len());
        Some(if cost(&eligible[b], cx.now) < cost(&eligible[a], cx.now) {
            b
        } else {
            a
        })
    }
}

impl Selector for LeastLatency {
    fn build(&self, _eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        Box::new(LowestCost)
    }
}

/// `weighted-random`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedRandom;

#[derive(Debug)]
struct PrefixSums {
    /// `sums[i]` is the total weight of endpoints `0..=i`.
    sums: Vec<u64>,
}

impl Pick for PrefixSums {
    fn pick(&self, _eligible: &[Arc<EndpointView>], cx: &PickContext<'_>) -> Option<usize> {
        let total = *self.sums.last()?;
        let point = ((u128::from(cx.rng.next_u64()) * u128::from(total)) >> 64) as u64;
        Some(self.sums.partition_point(|&sum| sum <= point))
    }
}

impl Selector for WeightedRandom {
    fn build(&self, eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        let mut total = 0u64;
        let sums = eligible
            .iter()
            .map(|e| {
                total += u64::from(e.weight());
                total
            })
            .collect();
        Box::new(PrefixSums { sums })
    }
}

/// `consistent-hash`, with `virtual_nodes` ring points per unit of weight.
#[derive(Debug, Clone, Copy)]
pub struct ConsistentHash {
    /// Ring points per unit of weight (default 100).
    pub virtual_nodes: u32,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self { virtual_nodes: 100 }
    }
}

/// A stable 64-bit hash (FNV-1a over the bytes, then a finalising mix): specified, so the same
/// key and the same endpoint names give the same ring on every run, replica and toolchain.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser spreads FNV's weak low bits over the ring.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// The most ring points one endpoint gets, whatever its weight.
const MAX_POINTS_PER_ENDPOINT: u32 = 10_000;

#[derive(Debug)]
struct Ring {
    /// (point, index into the eligible set), sorted by point.
    points: Vec<(u64, usize)>,
    fallback: Turn,
}

impl Pick for Ring {
    fn pick(&self, eligible: &[Arc<EndpointView>], cx: &PickContext<'_>) -> Option<usize> {
        let Some(key) = cx.hint.and_then(|h| h.key.as_deref()) else {
            return self.fallback.pick(eligible, cx);
        };
        let point = stable_hash(&[key.as_bytes()]);
        let at = self.points.partition_point(|&(p, _)| p < point);
        let (_, index) = self.points.get(at).or_else(|| self.points.first())?;
        Some(*index)
    }
}

impl Selector for ConsistentHash {
    fn build(&self, eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        let mut points = Vec::new();
        for (index, endpoint) in eligible.iter().enumerate() {
            // Bounded: a huge weight must not build a huge ring.
            let nodes = self
                .virtual_nodes
                .max(1)
                .saturating_mul(endpoint.weight())
                .min(MAX_POINTS_PER_ENDPOINT);
            points.extend((0..nodes).map(|v| {
                (
                    stable_hash(&[endpoint.name().as_bytes(), &v.to_le_bytes()]),
                    index,
                )
            }));
        }
        points.sort_unstable();
        Box::new(Ring {
            points,
            fallback: Turn::default(),
        })
    }
}

/// `priority`. Its turn counter outlives rebuilds of the eligible set.
#[derive(Debug, Clone, Default)]
pub struct Priority {
    turn: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct TopTier {
    /// Indices of the eligible endpoints with the highest priority.
    members: Vec<usize>,
    turn: Arc<AtomicUsize>,
}

impl Pick for TopTier {
    fn pick(&self, _eligible: &[Arc<EndpointView>], _cx: &PickContext<'_>) -> Option<usize> {
        let n = self.members.len();
        (n > 0).then(|| self.members[self.turn.fetch_add(1, Ordering::Relaxed) % n])
    }
}

impl Selector for Priority {
    fn build(&self, eligible: &[Arc<EndpointView>]) -> Box<dyn Pick> {
        let top = eligible.iter().map(|e| e.priority()).max();
        let members = eligible
            .iter()
            .enumerate()
            .filter(|(_, e)| Some(e.priority()) == top)
            .map(|(i, _)| i)
            .collect();
        Box::new(TopTier {
            members,
            turn: Arc::clone(&self.turn),
        })
    }
}
