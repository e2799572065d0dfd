//! A registry of named stacks' handles: what status pages and admin APIs read.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use switchyard_breaker::BreakerSnapshot;
use switchyard_bulkhead::BulkheadStats;

use crate::layer::StackHandles;

/// The handles of every registered stack, by name. Cheap to clone; clones share the entries.
///
/// ```
/// use switchyard_resilience::{StackRegistry, ResilienceConfig, ResilienceLayer};
///
/// let registry = StackRegistry::new();
/// let config = ResilienceConfig::from_json(r#"{ "circuit_breaker": {} }"#).unwrap();
/// let stack = ResilienceLayer::new("payments", &config).unwrap();
/// registry.register(stack.handles());
///
/// let snapshot = registry.snapshot();
/// assert_eq!(snapshot[0].name, "payments");
/// assert!(snapshot[0].circuit_breaker.is_some());
/// registry.reset_all();
/// ```
#[derive(Debug, Clone, Default)]
pub struct StackRegistry {
    stacks: Arc<RwLock<BTreeMap<Arc<str>, StackHandles>>>,
}

/// One stack's state, as serde data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackSnapshot {
    /// The stack's name.
    pub name: String,
    /// Its circuit breaker's state and counters, if it has one.
    pub circuit_breaker: Option<BreakerSnapshot>,
    /// Its bulkhead's occupancy and counters, if it has one.
    pub bulkhead: Option<BulkheadStats>,
}

impl StackRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stack's handles under its name, replacing (and returning) any with that name —
    /// as a route rebuilt with a new config replaces its old stack.
    pub fn register(&self, handles: StackHandles) -> Option<StackHandles> {
        self.write().insert(Arc::clone(&handles.name), handles)
    }

    /// Removes the stack named `name`.
    pub fn remove(&self, name: &str) -> Option<StackHandles> {
        self.write().remove(name)
    }

    /// The handles of the stack named `name`.
    pub fn get(&self, name: &str) -> Option<StackHandles> {
        self.read().get(name).cloned()
    }

    /// The registered names, in order.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().map(ToString::to_string).collect()
    }

    /// Every stack's state, by name.
    pub fn snapshot(&self) -> Vec<StackSnapshot> {
        self.read()
            .values()
            .map(|handles| StackSnapshot {
                name: handles.name.to_string(),
                circuit_breaker: handles.breaker.as_ref().map(|b| b.snapshot()),
                bulkhead: handles.bulkhead.as_ref().map(|b| b.stats()),
            })
            .collect()
    }

    /// Resets every breaker (closed, its recorded calls forgotten), as `BreakerHandle::reset`.
    pub fn reset_all(&self) {
        for handles in self.read().values() {
            if let Some(breaker) = &handles.breaker {
                breaker.reset();
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, StackHandles>> {
        // A panic while holding the lock leaves a valid map: use it.
        switchyard_core::sync::read(&self.stacks)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Arc<str>, StackHandles>> {
        switchyard_core::sync::write(&self.stacks)
    }
}
