//! The stream's config: ordering, backpressure, retry and shutdown, as serde data.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_bulkhead::{BulkheadConfig, BulkheadPolicy, MAX_CONCURRENT_CALLS, NO_DEADLINE};
use switchyard_core::ConfigError;
use switchyard_retry::{BackoffConfig, Jitter};

/// How one client stream is processed. Fixed once the stream starts.
///
/// ```
/// use switchyard_stream::{StreamConfig, OrderingMode, BackpressurePolicy};
///
/// let options = StreamConfig::from_json(r#"{
///     "ordering": { "mode": "keyed_fifo", "capacity": 1000 },
///     "backpressure": { "policy": "queue", "capacity": 8, "queue_capacity": 64 },
///     "retry": { "max_attempts": 3, "backoff": "50ms" },
///     "shutdown": { "grace_period": "10s", "drain_on_close": true }
/// }"#).unwrap();
/// assert_eq!(options.ordering.mode, OrderingMode::KeyedFifo);
/// assert_eq!(options.backpressure.policy, BackpressurePolicy::Queue);
///
/// let err = StreamConfig::from_json(r#"{ "retry": { "backof": "1s" } }"#).unwrap_err();
/// assert_eq!(err.field(), "retry.backof");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// The order messages run in.
    pub ordering: OrderingConfig,
    /// Admission under load.
    pub backpressure: BackpressureConfig,
    /// Retries of each message.
    pub retry: MessageRetryConfig,
    /// Graceful termination.
    pub shutdown: ShutdownConfig,
}

/// The order messages run in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderingConfig {
    /// Global FIFO (one message at a time, in stream order) or FIFO per key.
    pub mode: OrderingMode,
    /// Messages that may wait for their turn at once, over all keys; one more is rejected with
    /// [`FailureKind::Ordering`](crate::FailureKind::Ordering). 0: unbounded.
    pub capacity: usize,
}

/// The ordering strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderingMode {
    /// One message at a time, in the order the stream sent them.
    #[default]
    Fifo,
    /// Messages of one key one at a time, in stream order; different keys run concurrently
    /// (up to the backpressure capacity). Needs a key function.
    KeyedFifo,
}

/// Admission under load: how many messages execute at once, and what happens beyond. The
/// policies are switchyard-bulkhead's, run by its admission controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// What happens to a message whose turn comes when `capacity` messages execute.
    pub policy: BackpressurePolicy,
    /// Messages executing at once (over all keys). 0: unlimited (the policy never applies).
    pub capacity: u32,
    /// Under `queue`: messages that may wait for a slot at once; one more is rejected.
    /// 0: unbounded.
    pub queue_capacity: u32,
    /// Under `queue`: the longest wait for a slot, then the message is rejected. Unset: no
    /// limit ("queue until capacity is available").
    #[serde(
        default,
        with = "switchyard_core::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait: Option<Duration>,
}

/// The backpressure policies: reject, wait, or admit and signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackpressurePolicy {
    /// Reject at once with [`FailureKind::Backpressure`](crate::FailureKind::Backpressure).
    HardReject,
    /// Wait for a slot (bounded by `queue_capacity` and `max_wait`).
    #[default]
    Queue,
    /// Run anyway, counting it.
    SoftAllow,
    /// Run anyway, counting it and signalling the pressure: [`Pipeline::pressure`] is `true`
    /// while any stream runs beyond capacity, with the `switchyard_stream_over_capacity`
    /// gauge and an event on each change.
    ///
    /// [`Pipeline::pressure`]: crate::Pipeline::pressure
    SoftAllowWithSignal,
}

impl BackpressurePolicy {
    /// A stable snake_case name, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HardReject => "hard_reject",
            Self::Queue => "queue",
            Self::SoftAllow => "soft_allow",
            Self::SoftAllowWithSignal => "soft_allow_with_signal",
        }
    }
}

/// Retries of each message.
///
/// The pause before each retry is switchyard-retry's backoff: a duration (`"50ms"`, the same
/// pause each time) or a growing one (`{"initial": "50ms", "multiplier": 2.0, "max": "1s"}`),
/// randomised by `jitter` (none unless set).
///
/// ```
/// use std::time::Duration;
/// use switchyard_stream::StreamConfig;
/// use switchyard_retry::{BackoffConfig, Jitter};
///
/// let ms = Duration::from_millis;
/// let fixed = StreamConfig::from_json(r#"{ "retry": { "backoff": "50ms" } }"#)?;
/// assert_eq!(fixed.retry.backoff, BackoffConfig::constant(ms(50)));
///
/// let growing = StreamConfig::from_json(r#"{ "retry": {
///     "max_attempts": 5,
///     "backoff": { "initial": "10ms", "multiplier": 2.0, "max": "80ms" },
///     "jitter": "equal"
/// } }"#)?;
/// assert_eq!(growing.retry.backoff, BackoffConfig::new(ms(10), 2.0, ms(80)));
/// assert_eq!(growing.retry.jitter, Jitter::Equal);
/// # Ok::<(), switchyard_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageRetryConfig {
    /// Attempts per message, the first included; 0 and 1 both mean no retry. Only retryable
    /// failures are retried ([`FailureKind::is_retryable`](crate::FailureKind::is_retryable)).
    pub max_attempts: u32,
    /// The pause before each retry (tokio time). Zero, the default: none.
    #[serde(with = "backoff_or_duration")]
    pub backoff: BackoffConfig,
    /// How the pause is randomised. [`Jitter::None`], the default: exactly the backoff.
    pub jitter: Jitter,
}

impl Default for MessageRetryConfig {
    /// No retry, no pause, no jitter.
    fn default() -> Self {
        Self {
            max_attempts: 0,
            backoff: BackoffConfig::constant(Duration::ZERO),
            jitter: Jitter::None,
        }
    }
}

/// A backoff written as a duration (a constant pause) or as switchyard-retry's object; a
/// constant one is written back as a duration.
mod backoff_or_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use switchyard_retry::BackoffConfig;

    pub(super) fn serialize<S: Serializer>(
        backoff: &BackoffConfig,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if backoff.multiplier == 1.0 && backoff.initial == backoff.max {
            switchyard_core::duration::serialize(&backoff.initial, serializer)
        } else {
            backoff.serialize(serializer)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BackoffConfig, D::Error> {
        deserializer.deserialize_any(BackoffVisitor)
    }

    struct BackoffVisitor;

    impl<'de> Visitor<'de> for BackoffVisitor {
        type Value = BackoffConfig;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration ("50ms") or a backoff object ({"initial": "50ms", ...})"#)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<BackoffConfig, E> {
            let pause: Duration =
                switchyard_core::duration::deserialize(de::value::StrDeserializer::<E>::new(text))?;
            Ok(BackoffConfig::constant(pause))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BackoffConfig, A::Error> {
            BackoffConfig::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
}

/// Graceful termination, when the pipeline is shut down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long messages already admitted may keep running once shutdown starts; after it,
    /// those still running are cancelled and reported as
    /// [`FailureKind::Shutdown`](crate::FailureKind::Shutdown).
    #[serde(with = "switchyard_core::duration")]
    pub grace_period: Duration,
    /// Run the messages already waiting in ordering queues (within the grace period) instead
    /// of rejecting them when shutdown starts. New messages are rejected either way.
    pub drain_on_close: bool,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(30),
            drain_on_close: false,
        }
    }
}

impl StreamConfig {
    /// Reads and validates a JSON document.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the JSON path of the first bad field.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self = switchyard_core::config::from_json(text, "options")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.retry
            .backoff
            .validate(self.retry.jitter)
            .map_err(|e| e.within("retry.backoff"))?;
        if let Some(config) = self.bulkhead()? {
            config.validate().map_err(|e| e.within("backpressure"))?;
        }
        Ok(())
    }

    /// The bulkhead config the backpressure section stands for (`None`: unlimited).
    pub(crate) fn bulkhead(&self) -> Result<Option<BulkheadConfig>, ConfigError> {
        let b = &self.backpressure;
        if b.capacity == 0 {
            return Ok(None);
        }
        if b.capacity > MAX_CONCURRENT_CALLS {
            return Err(ConfigError::new(
                "backpressure.capacity",
                format!("must be at most {MAX_CONCURRENT_CALLS}"),
            ));
        }
        if b.max_wait.is_some_and(|w| w.is_zero()) {
            return Err(ConfigError::new(
                "backpressure.max_wait",
                "must be more than 0 (leave it out to wait without limit)",
            ));
        }
        let policy = match b.policy {
            BackpressurePolicy::HardReject => BulkheadPolicy::HardReject,
            BackpressurePolicy::Queue => BulkheadPolicy::Queue {
                capacity: if b.queue_capacity == 0 {
                    u32::MAX
                } else {
                    b.queue_capacity
                },
                max_wait: b.max_wait.unwrap_or(NO_DEADLINE),
            },
            BackpressurePolicy::SoftAllow => BulkheadPolicy::SoftAllow,
            BackpressurePolicy::SoftAllowWithSignal => BulkheadPolicy::SoftAllowWithSignal,
        };
        Ok(Some(BulkheadConfig::new(b.capacity, policy)))
    }
}
