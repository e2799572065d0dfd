//! Active health checks: a check service run per endpoint on an interval, with a timeout and
//! consecutive-failure / consecutive-success thresholds, driving the endpoint's [`Health`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::ConfigError;
use switchyard_core::sync::lock;
use tokio::task::JoinHandle;
use tower::{BoxError, Service, ServiceExt};

use crate::endpoint::{EndpointView, Health};
use crate::shared::Shared;

/// How an endpoint is checked: how often, how long a check may take, and how many results in
/// a row change its health.
///
/// [`Balance::check`](crate::Balance::check) refuses a config that
/// [`validate`](Self::validate) refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Time between checks (above zero).
    #[serde(default = "default_interval", with = "switchyard_core::duration")]
    pub interval: Duration,
    /// A check that takes longer failed (above zero).
    #[serde(default = "default_timeout", with = "switchyard_core::duration")]
    pub timeout: Duration,
    /// Failed checks in a row that make the endpoint `Unhealthy` (at least 1).
    #[serde(default = "default_failures")]
    pub failure_threshold: u32,
    /// Passed checks in a row that make an unhealthy endpoint `Healthy` again (at least 1).
    #[serde(default = "default_successes")]
    pub success_threshold: u32,
}

const fn default_interval() -> Duration {
    Duration::from_secs(30)
}

const fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

const fn default_failures() -> u32 {
    3
}

const fn default_successes() -> u32 {
    2
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            timeout: default_timeout(),
            failure_threshold: default_failures(),
            success_threshold: default_successes(),
        }
    }
}

impl HealthCheckConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work, as it sits in a
    /// balancer's config (`health_check.interval`, `health_check.failure_threshold`, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_fields().map_err(|e| e.within("health_check"))
    }

    fn validate_fields(&self) -> Result<(), ConfigError> {
        // A zero interval would make tokio's `interval` panic in the checker's task.
        if self.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be greater than zero"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "must be at least 1"));
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::new("success_threshold", "must be at least 1"));
        }
        Ok(())
    }
}

/// A running health check; dropping it (or [`stop`](Self::stop)) stops the checks and leaves
/// the endpoint's health as it was.
#[derive(Debug)]
#[must_use = "dropping it stops the checks"]
pub struct HealthChecker {
    endpoint: Arc<str>,
    task: JoinHandle<()>,
}

impl HealthChecker {
    /// The endpoint it checks.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops the checks.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Whether the checks still run (they end by themselves when the endpoint is removed).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a checker reports: set the endpoint's health, or learn it is gone.
pub(crate) trait Report: Send + Sync + 'static {
    /// Whether the endpoint is still in its balancer.
    fn alive(&self) -> bool;
    /// Sets the health; `false` when the endpoint no longer exists.
    fn report(&self, health: Health) -> bool;
}

/// A health checker's way back to its endpoint in a balancer.
pub(crate) struct Reporter<S, Req> {
    shared: Arc<Shared<S, Req>>,
    view: Arc<EndpointView>,
}

impl<S, Req> Reporter<S, Req> {
    pub(crate) fn new(shared: Arc<Shared<S, Req>>, view: Arc<EndpointView>) -> Self {
        Self { shared, view }
    }
}

impl<S, Req> Report for Reporter<S, Req>
where
    S: Clone + Send + Sync + 'static,
    Req: 'static,
{
    fn alive(&self) -> bool {
        !self.view.removed.load(Ordering::Relaxed)
    }

    fn report(&self, health: Health) -> bool {
        let members = lock(&self.shared.members);
        if !members.iter().any(|m| Arc::ptr_eq(&m.view, &self.view)) {
            return false;
        }
        // An endpoint taken offline by hand stays offline whatever its checks say.
        if !self.view.held_offline.load(Ordering::Acquire) {
            self.shared.apply_health(&members, &self.view, health);
        }
        true
    }
}

/// Counts consecutive outcomes and turns them into health changes.
#[derive(Debug, Default)]
struct Thresholds {
    failures: u32,
    successes: u32,
    unhealthy: bool,
}

impl Thresholds {
    /// The health to report after one check, if it should change.
    fn observe(
        &mut self,
        result: Result<Health, ()>,
        config: &HealthCheckConfig,
    ) -> Option<Health> {
        match result {
            Err(()) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= config.failure_threshold && !self.unhealthy {
                    self.unhealthy = true;
                    return Some(Health::Unhealthy);
                }
                None
            }
            Ok(health) if !health.is_eligible() => {
                // The check itself says `Unhealthy` or `Offline`: believed at once, and the
                // way back needs the full run of passes.
                self.failures = 0;
                self.successes = 0;
                self.unhealthy = true;
                Some(health)
            }
            Ok(health) => {
                self.failures = 0;
                self.successes += 1;
                if self.unhealthy && self.successes < config.success_threshold {
                    return None;
                }
                self.unhealthy = false;
                Some(health)
            }
        }
    }
}

pub(crate) fn spawn<K>(
    endpoint: Arc<str>,
    balancer: Arc<str>,
    mut check: K,
    config: HealthCheckConfig,
    report: Arc<dyn Report>,
) -> HealthChecker
where
    K: Service<(), Response = Health> + Send + 'static,
    K::Error: Into<BoxError>,
    K::Future: Send,
{
    let name = Arc::clone(&endpoint);
    let task = tokio::spawn(async move {
        let mut thresholds = Thresholds::default();
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !report.alive() {
                return;
            }
            let result = match tokio::time::timeout(config.timeout, check.ready_and_call()).await {
                Ok(Ok(health)) => Ok(health),
                Ok(Err(error)) => {
                    tracing::debug!(target: "switchyard_balance", balancer = %balancer, endpoint = %name, %error, "health check failed");
                    Err(())
                }
                Err(_) => {
                    tracing::debug!(target: "switchyard_balance", balancer = %balancer, endpoint = %name, "health check timed out");
                    Err(())
                }
            };
            if let Some(health) = thresholds.observe(result, &config)
                && !report.report(health)
            {
                return;
            }
        }
    });
    HealthChecker { endpoint, task }
}

/// `ready` then `call(())`, boxed into one future (errors converted).
trait ReadyAndCall {
    fn ready_and_call(&mut self) -> impl Future<Output = Result<Health, BoxError>> + Send;
}

impl<K> ReadyAndCall for K
where
    K: Service<(), Response = Health> + Send,
    K::Error: Into<BoxError>,
    K::Future: Send,
{
    async fn ready_and_call(&mut self) -> Result<Health, BoxError> {
        self.ready()
            .await
            .map_err(Into::into)?
            .call(())
            .await
            .map_err(Into::into)
    }
}

/// The overall health of a set of endpoints, by the worst-case rule: `Healthy` when all are
/// healthy (or unknown), `Degraded` when some are degraded and none is unhealthy or offline,
/// `Unhealthy` when any is unhealthy or offline; `Unknown` with no endpoint.
pub fn overall(healths: impl IntoIterator<Item = Health>) -> Health {
    let mut overall = None;
    for health in healths {
        overall = Some(match (overall, health) {
            (_, Health::Unhealthy | Health::Offline) | (Some(Health::Unhealthy), _) => {
                Health::Unhealthy
            }
            (_, Health::Degraded) | (Some(Health::Degraded), _) => Health::Degraded,
            _ => Health::Healthy,
        });
    }
    overall.unwrap_or(Health::Unknown)
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_need_consecutive_outcomes() {
        let config = HealthCheckConfig {
            failure_threshold: 3,
            success_threshold: 2,
            ..HealthCheckConfig::default()
        };
        let mut t = Thresholds::default();
        assert_eq!(
            t.observe(Ok(Health::Healthy), &config),
            Some(Health::Healthy)
        );
        assert_eq!(t.observe(Err(()), &config), None);
        assert_eq!(t.observe(Err(()), &config), None);
        assert_eq!(
            t.observe(Ok(Health::Healthy), &config),
            Some(Health::Healthy)
        );
        for _ in 0..2 {
            assert_eq!(t.observe(Err(()), &config), None);
        }
        assert_eq!(t.observe(Err(()), &config), Some(Health::Unhealthy));
        assert_eq!(t.observe(Err(()), &config), None);
        assert_eq!(t.observe(Ok(Health::Healthy), &config), None);
        assert_eq!(
            t.observe(Ok(Health::Degraded), &config),
            Some(Health::Degraded)
        );
        // A check answering Offline is believed at once; one pass does not undo it.
        assert_eq!(
            t.observe(Ok(Health::Offline), &config),
            Some(Health::Offline)
        );
        assert_eq!(t.observe(Ok(Health::Healthy), &config), None);
        assert_eq!(
            t.observe(Ok(Health::Healthy), &config),
            Some(Health::Healthy)
        );
    }

    #[test]
    fn overall_is_the_worst_case() {
        use Health::*;
        assert_eq!(overall([]), Unknown);
        assert_eq!(overall([Healthy, Unknown]), Healthy);
        assert_eq!(overall([Healthy, Degraded]), Degraded);
        assert_eq!(overall([Degraded, Offline, Healthy]), Unhealthy);
        assert_eq!(overall([Unhealthy, Degraded]), Unhealthy);
    }
}
