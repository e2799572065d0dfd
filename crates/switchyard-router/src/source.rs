//! Where route rows come from: the [`RouteSource`] seam and the row type.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::SourceError;

/// One row of the routes table: which strategy serves a service, where, with what config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    /// The service's name, the key callers dispatch on.
    pub service_name: String,
    /// `local`, `noop`, `http` or any strategy a transport is registered for.
    pub strategy: String,
    /// Where a remote strategy sends calls (a URL for `http`); unused by `local` and `noop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Per-route JSON: a `ResilienceConfig` plus a `transport` object for the factory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Unix seconds of the row's last change (set by the database).
    #[serde(default)]
    pub updated_at: i64,
}

impl RouteRow {
    /// A row with no endpoint and no config.
    pub fn new(service_name: impl Into<String>, strategy: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            strategy: strategy.into(),
            endpoint: None,
            config: None,
            updated_at: 0,
        }
    }

    /// The same row with an endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The same row with a config document.
    #[must_use]
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = Some(config.into());
        self
    }
}

/// Where a router's rows live, and how it learns they changed.
///
/// The router's diff and rebuild logic only sees whole snapshots of rows, so a source is two
/// operations: read every row, and wait until they may have changed. [`SqliteSource`]
/// (polling `PRAGMA data_version`) is the first implementation; a source over another store
/// (PostgreSQL `LISTEN/NOTIFY`, a config service) implements the same two.
///
/// [`SqliteSource`]: crate::SqliteSource
pub trait RouteSource: Send + Sync + 'static {
    /// Reads every route row.
    fn load(&self) -> impl Future<Output = Result<Vec<RouteRow>, SourceError>> + Send;

    /// Resolves when the rows may have changed since the last call (spurious wake-ups are
    /// allowed: a reload with no change keeps every route). An error is reported in the
    /// router's status and the watcher tries again after its interval.
    fn changed(&self) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// How often the source looks for changes, if it polls: the watcher checks the routes'
    /// credential files as often. `None` (the default): every second.
    fn poll_every(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Checks a service name: 1 to 128 characters from `[A-Za-z0-9._-]`, so it is a safe URL path
/// segment and metric label.
pub(crate) fn valid_service_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
