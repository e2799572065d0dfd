//! A breaker per key: per host, per route, per tenant.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use switchyard_core::{BoxError, Classify, ConfigError, ErrorsAsFailures};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::config::{CircuitBreakerConfig, Mode};
use crate::error::BreakerOpen;
use crate::future::{Guard, ResponseFuture};
use crate::handle::{BreakerHandle, BreakerSnapshot, Shared};
use crate::policy::Policy;
use crate::state::State;

struct Entry {
    shared: Arc<Shared>,
    last_used: AtomicU64,
}

impl Entry {
    /// Marks the entry used in generation `tick`, writing only when the mark changes.
    fn touch(&self, tick: u64) {
        if self.last_used.load(Ordering::Relaxed) != tick {
            self.last_used.store(tick, Ordering::Relaxed);
        }
    }
}

struct Breakers<K> {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    max_keys: usize,
    map: RwLock<HashMap<K, Entry>>,
    clock: AtomicU64,
}

impl<K> Breakers<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// The breaker for `key`, made on first use. A hit takes a shared read lock and writes
    /// nothing shared but the entry's own use mark; only a new key takes the write lock.
    ///
    /// Recency is a generation, not a per-call counter: `clock` counts the keys added, and a
    /// hit marks its entry with that count. Eviction picks the entry with the lowest mark,
    /// which is least-recently-used up to the resolution of key arrivals (two entries used
    /// between the same two arrivals tie), without a contended counter on every call.
    fn get_or_insert(&self, key: &K) -> Arc<Shared> {
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = map.get(key) {
                entry.touch(self.clock.load(Ordering::Relaxed));
                return Arc::clone(&entry.shared);
            }
        }
        // Built outside the write lock: a window can be large, and other keys keep flowing.
        let name: Arc<str> = format!("{}/{key}", self.name).into();
        let policy = Policy::from_config(&self.config.trip);
        let fresh = Arc::new(Shared::new(name, self.config.clone(), policy));
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get(key) {
            entry.touch(self.clock.load(Ordering::Relaxed));
            return Arc::clone(&entry.shared);
        }
        // A new entry is marked with the generation before it and opens the next one, so an
        // entry used after it arrived ranks above it.
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        if map.len() >= self.max_keys {
            Self::evict(&mut map);
        }
        map.insert(
            key.clone(),
            Entry {
                shared: Arc::clone(&fresh),
                last_used: AtomicU64::new(tick),
            },
        );
        fresh
    }

    /// Makes room: the least recently used closed breaker goes first, then open or
    /// half-open ones (which protect a sick backend), and a breaker an operator forced goes
    /// last. A scan over the keys, under the write lock, paid once per new key beyond
    /// `max_keys`: keep `max_keys` to what a scan may cost (thousands, not millions).
    fn evict(map: &mut HashMap<K, Entry>) {
        let rank = |state: State| match state {
            State::Closed => 0,
            State::Open | State::HalfOpen => 1,
            State::ForcedOpen | State::ForcedClosed => 2,
        };
        let victim = map
            .iter()
            .min_by_key(|(_, e)| {
                (
                    rank(e.shared.circuit.state()),
                    e.last_used.load(Ordering::Relaxed),
                )
            })
            .map(|(k, _)| k.clone());
        if let Some(key) = victim {
            map.remove(&key);
        }
    }
}

/// Wraps services in a circuit breaker per key, the key taken from each request by a
/// function (a host, a route name, a tenant id).
///
/// Keys share one config; each key's breaker is named `<name>/<key>`. At most `max_keys`
/// breakers are kept: a new key beyond that evicts the least recently used closed breaker
/// (an open one only when all are open, a forced one last), so memory stays bounded under any
/// key churn. Metric series are labelled per key name and are not removed on eviction, as
/// `metrics` recorders keep series until they expire them: bound `max_keys` with that in mind.
///
/// The key is known only in `call`, so a keyed breaker always fails fast: `poll_ready` readies
/// the inner service and `call` returns a ready [`BreakerOpen`] for a key whose breaker
/// refuses.
pub struct KeyedCircuitBreakerLayer<K, F, C = ErrorsAsFailures> {
    breakers: Arc<Breakers<K>>,
    key_fn: F,
    classifier: C,
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// Breakers named `<name>/<key>`, keyed by `key_fn(&request)`, at most `max_keys` of them.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`; `mode` must be
    /// `fail_fast`, and `max_keys` at least 1.
    pub fn new<Req>(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
        max_keys: usize,
        key_fn: F,
    ) -> Result<Self, ConfigError>
    where
        F: Fn(&Req) -> K,
    {
        config.validate()?;
        if config.mode != Mode::FailFast {
            return Err(ConfigError::new(
                "mode",
                "a keyed breaker learns its key in `call`, so it can only fail fast",
            ));
        }
        if max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        switchyard_core::rejection::register::<BreakerOpen>();
        Ok(Self {
            breakers: Arc::new(Breakers {
                name: name.into(),
                config,
                max_keys,
                map: RwLock::new(HashMap::new()),
                clock: AtomicU64::new(0),
            }),
            key_fn,
            classifier: ErrorsAsFailures,
        })
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// Uses `classifier` to decide which outcomes are failures, successes or ignored.
    pub fn with_classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, F, C2> {
        KeyedCircuitBreakerLayer {
            breakers: self.breakers,
            key_fn: self.key_fn,
            classifier,
        }
    }

    /// The handle over every key's breaker.
    pub fn handle(&self) -> KeyedBreakerHandle<K> {
        KeyedBreakerHandle {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            breakers: Arc::clone(&self.breakers),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", &self.breakers.name)
            .field("max_keys", &self.breakers.max_keys)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            breakers: Arc::clone(&self.breakers),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Inspects every key's breaker of a [`KeyedCircuitBreakerLayer`].
pub struct KeyedBreakerHandle<K> {
    breakers: Arc<Breakers<K>>,
}

impl<K> Clone for KeyedBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<K> fmt::Debug for KeyedBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerHandle")
            .field("name", &self.breakers.name)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> KeyedBreakerHandle<K> {
    /// The handle of `key`'s breaker, if it has one now.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        let map = self
            .breakers
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(key).map(|e| BreakerHandle {
            shared: Arc::clone(&e.shared),
        })
    }

    /// How many keys have a breaker now.
    pub fn len(&self) -> usize {
        self.breakers
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key has a breaker yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every key's breaker, sorted by name.
    pub fn snapshot_all(&self) -> Vec<BreakerSnapshot> {
        let handles: Vec<BreakerHandle> = {
            let map = self
                .breakers
                .map
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            map.values()
                .map(|e| BreakerHandle {
                    shared: Arc::clone(&e.shared),
                })
                .collect()
        };
        let mut all: Vec<_> = handles.iter().map(BreakerHandle::snapshot).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// A service with a circuit breaker per key. Built by [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreaker<S, K, F, C = ErrorsAsFailures> {
    inner: S,
    breakers: Arc<Breakers<K>>,
    key_fn: F,
    classifier: C,
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breakers: Arc::clone(&self.breakers),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", &self.breakers.name)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// The handle over every key's breaker.
    pub fn handle(&self) -> KeyedBreakerHandle<K> {
        KeyedBreakerHandle {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = self.breakers.get_or_insert(&(self.key_fn)(&req));
        match shared.circuit.acquire(Instant::now) {
            Ok(permit) => {
                let start = shared.slow_call_duration.map(|_| Instant::now());
                let guard = Guard::new(shared, permit);
                ResponseFuture::called(self.inner.call(req), guard, self.classifier.clone(), start)
            }
            Err(refusal) => {
                let error = BreakerOpen::new(Arc::clone(&shared.name), refusal.retry_after);
                ResponseFuture::refused(error, &shared)
            }
        }
    }
}
