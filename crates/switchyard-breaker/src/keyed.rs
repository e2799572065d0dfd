//! A breaker per key: per host, per route, per tenant.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchyard_core::keyed::KeyedMap;
use switchyard_core::{BoxError, Classify, ConfigError, ErrorsAsFailures};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::config::{BreakerMode, CircuitBreakerConfig};
use crate::error::BreakerOpen;
use crate::future::{Guard, ResponseFuture};
use crate::handle::{BreakerHandle, BreakerSnapshot, Shared};
use crate::policy::Policy;
use crate::state::BreakerState;

struct Breakers<K> {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    map: KeyedMap<K, Arc<Shared>>,
}

impl<K> Breakers<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// The breaker for `key`, made on first use. To make room, a closed breaker goes first,
    /// then an open or half-open one (which protects a sick backend), and a breaker an
    /// operator forced goes last; least recently used first within each.
    fn get_or_insert(&self, key: &K) -> Arc<Shared> {
        let make = || {
            let name: Arc<str> = format!("{}/{key}", self.name).into();
            let policy = Policy::from_config(&self.config.trip);
            Arc::new(Shared::new(name, self.config.clone(), policy))
        };
        let rank = |shared: &Arc<Shared>| {
            let state = match shared.circuit.state() {
                BreakerState::Closed => 0,
                BreakerState::Open | BreakerState::HalfOpen => 1,
                BreakerState::ForcedOpen | BreakerState::ForcedClosed => 2,
            };
            // A breaker held elsewhere (a call in flight would record into it, a handle steers
            // it) goes after every one held by the map alone.
            let in_use = if Arc::strong_count(shared) > 1 { 3 } else { 0 };
            Some(state + in_use)
        };
        // Every breaker is evictable, so there is always room.
        self.map
            .get_or_insert_with(key, make, rank)
            .expect("every breaker ranks as evictable")
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
        if config.mode != BreakerMode::FailFast {
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
                map: KeyedMap::new(max_keys),
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
            .field("max_keys", &self.breakers.map.max_keys())
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

impl<K: Hash + Eq + Clone> KeyedBreakerHandle<K> {
    /// The handle of `key`'s breaker, if it has one now.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.breakers
            .map
            .get(key)
            .map(|shared| BreakerHandle { shared })
    }

    /// How many keys have a breaker now.
    pub fn len(&self) -> usize {
        self.breakers.map.len()
    }

    /// Whether no key has a breaker yet.
    pub fn is_empty(&self) -> bool {
        self.breakers.map.is_empty()
    }

    /// A snapshot of every key's breaker, sorted by name.
    pub fn snapshot_all(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<_> = self
            .breakers
            .map
            .values()
            .into_iter()
            .map(|shared| BreakerHandle { shared }.snapshot())
            .collect();
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
