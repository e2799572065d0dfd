//! A bulkhead per key: per tenant, per route, per downstream host.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchyard_core::keyed::KeyedMap;
use switchyard_core::{BoxError, ConfigError};
use tower::{Layer, Service};

use crate::admission::{AdmissionController, BulkheadStats};
use crate::config::{BulkheadConfig, BulkheadPolicy};
use crate::error::{BulkheadFull, FullReason};
use crate::future::ResponseFuture;
use crate::signal::NoSignal;

struct Bulkheads<K> {
    name: Arc<str>,
    config: BulkheadConfig,
    map: KeyedMap<K, AdmissionController>,
}

impl<K> Bulkheads<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// The bulkhead for `key`, made on first use; `None` when `max_keys` bulkheads exist and
    /// every one of them is busy, so none can be forgotten without breaking its isolation.
    /// Only idle bulkheads (no slot held, no waiter) are evicted, least recently used first.
    fn get_or_insert(&self, key: &K) -> Option<AdmissionController> {
        let make = || {
            // The config was validated when the layer was built.
            AdmissionController::new(format!("{}/{key}", self.name), &self.config)
                .expect("a validated config")
        };
        // Idle means nobody but the map holds the controller: no permit (each holds it), and no
        // caller between its lookup and its `try_slot`. Checked under the map's write lock, so
        // no new caller can take it meanwhile.
        let idle = |controller: &AdmissionController| controller.is_unshared().then_some(0);
        self.map.get_or_insert_with(key, make, idle)
    }
}

/// Wraps services in a bulkhead per key, the key taken from each request by a function (a
/// tenant id, a route name, a downstream host), so one noisy key cannot use the slots of the
/// others.
///
/// Keys share one config; each key's bulkhead is named `<name>/<key>`. At most `max_keys` are
/// kept: a new key beyond that evicts the least recently used idle bulkhead (no slot held, no
/// waiter). When every kept bulkhead is busy, the new key's call is refused with
/// [`BulkheadFull`] rather than breaking another key's isolation.
///
/// The key is known only in `call`, after the inner service was readied, so a keyed bulkhead
/// cannot queue: the `queue` policy is rejected when the layer is built.
pub struct KeyedBulkheadLayer<K, F> {
    bulkheads: Arc<Bulkheads<K>>,
    key_fn: F,
}

impl<K, F> KeyedBulkheadLayer<K, F> {
    /// Bulkheads named `<name>/<key>`, keyed by `key_fn(&request)`, at most `max_keys`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; `policy` must not be `queue` and
    /// `max_keys` must be at least 1.
    pub fn new<Req>(
        name: impl Into<Arc<str>>,
        config: BulkheadConfig,
        max_keys: usize,
        key_fn: F,
    ) -> Result<Self, ConfigError>
    where
        F: Fn(&Req) -> K,
    {
        config.validate()?;
        if let BulkheadPolicy::Queue { .. } = config.policy {
            return Err(ConfigError::new(
                "policy",
                "a keyed bulkhead learns its key in `call`, so it cannot queue",
            ));
        }
        if max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        switchyard_core::rejection::register::<BulkheadFull>();
        Ok(Self {
            bulkheads: Arc::new(Bulkheads {
                name: name.into(),
                config,
                map: KeyedMap::new(max_keys),
            }),
            key_fn,
        })
    }

    /// The handle over every key's bulkhead.
    pub fn handle(&self) -> KeyedBulkheadHandle<K> {
        KeyedBulkheadHandle {
            bulkheads: Arc::clone(&self.bulkheads),
        }
    }
}

impl<K, F: Clone> Clone for KeyedBulkheadLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            bulkheads: Arc::clone(&self.bulkheads),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<K, F> fmt::Debug for KeyedBulkheadLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkheadLayer")
            .field("name", &self.bulkheads.name)
            .field("max_keys", &self.bulkheads.map.max_keys())
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone> Layer<S> for KeyedBulkheadLayer<K, F> {
    type Service = KeyedBulkhead<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBulkhead {
            inner,
            bulkheads: Arc::clone(&self.bulkheads),
            key_fn: self.key_fn.clone(),
        }
    }
}

/// Inspects every key's bulkhead of a [`KeyedBulkheadLayer`].
pub struct KeyedBulkheadHandle<K> {
    bulkheads: Arc<Bulkheads<K>>,
}

impl<K> Clone for KeyedBulkheadHandle<K> {
    fn clone(&self) -> Self {
        Self {
            bulkheads: Arc::clone(&self.bulkheads),
        }
    }
}

impl<K> fmt::Debug for KeyedBulkheadHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkheadHandle")
            .field("name", &self.bulkheads.name)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedBulkheadHandle<K> {
    /// The controller of `key`'s bulkhead, if it has one now.
    pub fn get(&self, key: &K) -> Option<AdmissionController> {
        self.bulkheads.map.get(key)
    }

    /// How many keys have a bulkhead now.
    pub fn len(&self) -> usize {
        self.bulkheads.map.len()
    }

    /// Whether no key has a bulkhead yet.
    pub fn is_empty(&self) -> bool {
        self.bulkheads.map.is_empty()
    }

    /// The stats of every key's bulkhead, sorted by name.
    pub fn stats_all(&self) -> Vec<BulkheadStats> {
        let mut all: Vec<_> = self
            .bulkheads
            .map
            .values()
            .iter()
            .map(AdmissionController::stats)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// A service with a bulkhead per key. Built by [`KeyedBulkheadLayer`].
pub struct KeyedBulkhead<S, K, F> {
    inner: S,
    bulkheads: Arc<Bulkheads<K>>,
    key_fn: F,
}

impl<S, K, F> KeyedBulkhead<S, K, F> {
    /// The handle over every key's bulkhead.
    pub fn handle(&self) -> KeyedBulkheadHandle<K> {
        KeyedBulkheadHandle {
            bulkheads: Arc::clone(&self.bulkheads),
        }
    }
}

impl<S: Clone, K, F: Clone> Clone for KeyedBulkhead<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            bulkheads: Arc::clone(&self.bulkheads),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for KeyedBulkhead<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkhead")
            .field("inner", &self.inner)
            .field("name", &self.bulkheads.name)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedBulkhead<S, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key_fn)(&req);
        let Some(controller) = self.bulkheads.get_or_insert(&key) else {
            // No room for another key without breaking a busy key's isolation.
            let name: Arc<str> = format!("{}/{key}", self.bulkheads.name).into();
            return ResponseFuture::refused(BulkheadFull::new(name, FullReason::Full));
        };
        match controller.try_slot() {
            Some(permit) => ResponseFuture::called(self.inner.call(req), permit, NoSignal),
            None => ResponseFuture::refused(controller.reject(FullReason::Full)),
        }
    }
}
