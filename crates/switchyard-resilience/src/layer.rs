//! The stack: one layer that builds RateLimit → Bulkhead → CircuitBreaker → Retry → Timeout
//! around a service, from a [`ResilienceConfig`].

use std::fmt;
use std::sync::Arc;

use switchyard_breaker::{BreakerHandle, CircuitBreakerLayer};
use switchyard_bulkhead::{AdmissionController, BulkheadLayer};
use switchyard_core::{ConfigError, ErrorsAsFailures, HttpClassifier};
use switchyard_ratelimit::RateLimitLayer;
use switchyard_retry::RetryLayer;
use switchyard_retry::http::HttpRetryLayer;
use tower::layer::util::Identity;
use tower::util::{Either, option_layer};
use tower::{Layer, ServiceBuilder};

use crate::config::ResilienceConfig;
use crate::timeout::TimeoutLayer;

/// A layer left out when its config section is missing: the service itself.
type Maybe<L, S> = Either<<L as Layer<S>>::Service, S>;

/// The service a [`ResilienceLayer`] builds around `S`, outermost first: total timeout, rate
/// limit, bulkhead, circuit breaker, retry (`RL`), per-attempt timeout. Each layer a config
/// leaves out is `Either::Right` (the service below it), so a stack is one type whatever its
/// config.
pub type Stack<S, RL = Either<RetryLayer, Identity>, C = ErrorsAsFailures> = Maybe<
    TimeoutLayer,
    Maybe<
        RateLimitLayer,
        Maybe<
            BulkheadLayer,
            Maybe<CircuitBreakerLayer<C>, <RL as Layer<Maybe<TimeoutLayer, S>>>::Service>,
        >,
    >,
>;

/// The retry stage of a stack, which a config may leave out: `Either<RetryLayer, Identity>` for
/// `Clone` requests (`Right` when the config has no retry), [`HttpRetryLayer`] (which keeps handing
/// the inner service a `ReplayBody` when it retries nothing, so the stack's request type does not
/// depend on its config) for HTTP.
pub trait RetryStage {
    /// The same stage retrying nothing.
    #[must_use]
    fn without_retry(self) -> Self;
}

impl<C, R> RetryStage for Either<RetryLayer<C, R>, Identity> {
    fn without_retry(self) -> Self {
        Either::Right(Identity::new())
    }
}

impl<C> RetryStage for HttpRetryLayer<C> {
    fn without_retry(self) -> Self {
        HttpRetryLayer::without_retry(self)
    }
}

/// What a call is, for the per-pattern rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// One request, one response: every layer.
    #[default]
    RequestResponse,
    /// One request, a stream of items: every layer, on opening the stream only (items are
    /// not rate-limited or retried one by one).
    Stream,
    /// A request and an acknowledgement: every layer.
    Sink,
    /// A bidirectional channel: rate limit and circuit breaker on opening it, and nothing
    /// else — no bulkhead slot held for its life, and never a retry (a persistent
    /// connection reconnects at a higher level).
    Duplex,
}

/// Builds a whole resilience stack from one [`ResilienceConfig`], in the order of the
/// resilience chain, outermost first:
///
/// 1. **total timeout** — bounds everything below from `call` on, retries and backoffs
///    included;
/// 2. **rate limit** — one permit per call, however many attempts it makes;
/// 3. **bulkhead** — one slot per call, held across its retries;
/// 4. **circuit breaker** — judges each call by its final result; once open, calls are refused
///    before they reach the retry, so an open breaker stops retrying at once;
/// 5. **retry** — repeats failed attempts (a rejection from below, like a timeout, is retried
///    as core says);
/// 6. **timeout** — the deadline of each attempt.
///
/// Clones of the built service share every layer's state. Handles for status pages come from
/// [`handles`](Self::handles).
pub struct ResilienceLayer<RL = Either<RetryLayer, Identity>, C = ErrorsAsFailures> {
    name: Arc<str>,
    total_timeout: Option<TimeoutLayer>,
    rate_limit: Option<RateLimitLayer>,
    bulkhead: Option<BulkheadLayer>,
    breaker: Option<CircuitBreakerLayer<C>>,
    retry: RL,
    timeout: Option<TimeoutLayer>,
    fallback: Option<String>,
}

impl ResilienceLayer {
    /// The stack `config` describes, for services whose requests are `Clone`, named `name`
    /// in every layer's errors, metrics and events.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the dotted path of the first bad field.
    pub fn new(name: impl Into<Arc<str>>, config: &ResilienceConfig) -> Result<Self, ConfigError> {
        let name = name.into();
        let retry = config
            .retry
            .as_ref()
            .map(|retry| RetryLayer::new(Arc::clone(&name), retry))
            .transpose()
            .map_err(|e| e.within("retry"))?;
        Self::build(name, config, option_layer(retry), ErrorsAsFailures)
    }
}

impl ResilienceLayer<HttpRetryLayer, HttpClassifier> {
    /// The stack `config` describes, for `http::Request`s: the retry buffers bodies for replay
    /// ([`HttpRetryLayer`]), and the breaker counts 5xx responses as failures.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the dotted path of the first bad field.
    pub fn http(name: impl Into<Arc<str>>, config: &ResilienceConfig) -> Result<Self, ConfigError> {
        let name = name.into();
        let retry = http_retry(&name, config)?;
        Self::build(name, config, retry, HttpClassifier::server_errors())
    }
}

#[cfg(feature = "grpc")]
impl
    ResilienceLayer<
        HttpRetryLayer<switchyard_core::GrpcClassifier>,
        switchyard_core::GrpcClassifier,
    >
{
    /// The stack `config` describes, for gRPC calls as `http::Request`s (a tonic server's
    /// services, or around a `Channel`): the breaker and the retry judge a call by its gRPC
    /// status ([`GrpcClassifier`](switchyard_core::GrpcClassifier): `UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `INTERNAL`... fail; `INVALID_ARGUMENT` does not), read from a
    /// trailers-only response's `grpc-status`.
    ///
    /// gRPC calls are all `POST`: a retry section repeats calls only when `"POST"` is in its
    /// `methods` (or a request is marked `Idempotent`). Only a request whole at once is kept
    /// for replay ([`HttpRetryLayer::only_ready_bodies`]): a unary call, or a client stream
    /// already complete when sent, is retried; a stream still being written goes through
    /// unretried, never held back. On a server, streaming methods take
    /// [`for_pattern`](Self::for_pattern)`(Pattern::Duplex)`: no retry, no bulkhead slot.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the dotted path of the first bad field.
    pub fn grpc(name: impl Into<Arc<str>>, config: &ResilienceConfig) -> Result<Self, ConfigError> {
        let name = name.into();
        let classifier = switchyard_core::GrpcClassifier::new();
        let retry = http_retry(&name, config)?
            .with_classifier(classifier)
            .only_ready_bodies();
        Self::build(name, config, retry, classifier)
    }
}

/// The retry stage of an `http::Request` stack: `config`'s retry, or one retrying nothing.
fn http_retry(name: &Arc<str>, config: &ResilienceConfig) -> Result<HttpRetryLayer, ConfigError> {
    Ok(config
        .retry
        .as_ref()
        .map(|retry| HttpRetryLayer::new(Arc::clone(name), retry))
        .transpose()
        .map_err(|e| e.within("retry"))?
        .unwrap_or_else(HttpRetryLayer::disabled))
}

impl<RL, C> ResilienceLayer<RL, C> {
    fn build(
        name: Arc<str>,
        config: &ResilienceConfig,
        retry: RL,
        classifier: C,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let within = |section: &'static str| move |e: ConfigError| e.within(section);
        let rate_limit = config
            .rate_limit
            .as_ref()
            .map(|c| RateLimitLayer::new(Arc::clone(&name), c))
            .transpose()
            .map_err(within("rate_limit"))?;
        let bulkhead = config
            .bulkhead
            .as_ref()
            .map(|c| BulkheadLayer::new(Arc::clone(&name), c))
            .transpose()
            .map_err(within("bulkhead"))?;
        let breaker = config
            .circuit_breaker
            .as_ref()
            .map(|c| {
                CircuitBreakerLayer::new(Arc::clone(&name), c.clone())
                    .map(|layer| layer.with_classifier(classifier))
            })
            .transpose()
            .map_err(within("circuit_breaker"))?;
        Ok(Self {
            total_timeout: config
                .total_timeout
                .map(|t| TimeoutLayer::new(Arc::clone(&name), t)),
            timeout: config
                .timeout
                .map(|t| TimeoutLayer::new(Arc::clone(&name), t)),
            rate_limit,
            bulkhead,
            breaker,
            retry,
            fallback: config.fallback.clone(),
            name,
        })
    }

    /// Applies the per-pattern rules for `pattern`: a [`Pattern::Duplex`] stack keeps only its rate
    /// limit, circuit breaker and timeouts (no bulkhead, no retry); the others keep every layer.
    #[must_use]
    pub fn for_pattern(mut self, pattern: Pattern) -> Self
    where
        RL: RetryStage,
    {
        if pattern == Pattern::Duplex {
            self.bulkhead = None;
            self.retry = self.retry.without_retry();
        }
        self
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the fallback service the config asks for, for the builder to resolve and
    /// wrap around the stack with a [`FallbackLayer`](crate::FallbackLayer).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Handles on the stack's stateful layers, for status pages and a
    /// [`StackRegistry`](crate::StackRegistry).
    pub fn handles(&self) -> StackHandles {
        StackHandles {
            name: Arc::clone(&self.name),
            breaker: self.breaker.as_ref().map(CircuitBreakerLayer::handle),
            bulkhead: self.bulkhead.as_ref().map(|b| b.controller().clone()),
        }
    }
}

impl<RL: Clone, C: Clone> Clone for ResilienceLayer<RL, C> {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            total_timeout: self.total_timeout.clone(),
            rate_limit: self.rate_limit.clone(),
            bulkhead: self.bulkhead.clone(),
            breaker: self.breaker.clone(),
            retry: self.retry.clone(),
            timeout: self.timeout.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<RL: fmt::Debug, C> fmt::Debug for ResilienceLayer<RL, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("name", &self.name)
            .field("total_timeout", &self.total_timeout.is_some())
            .field("rate_limit", &self.rate_limit.is_some())
            .field("bulkhead", &self.bulkhead.is_some())
            .field("circuit_breaker", &self.breaker.is_some())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout.is_some())
            .finish()
    }
}

impl<S, RL, C> Layer<S> for ResilienceLayer<RL, C>
where
    RL: Layer<Maybe<TimeoutLayer, S>> + Clone,
    C: Clone,
{
    type Service = Stack<S, RL, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBuilder::new()
            .option_layer(self.total_timeout.clone())
            .option_layer(self.rate_limit.clone())
            .option_layer(self.bulkhead.clone())
            .option_layer(self.breaker.clone())
            .layer(self.retry.clone())
            .option_layer(self.timeout.clone())
            .service(inner)
    }
}

/// Handles on one stack's stateful layers.
#[derive(Debug, Clone)]
pub struct StackHandles {
    pub(crate) name: Arc<str>,
    /// The circuit breaker's handle: state, snapshot, force, reset.
    pub breaker: Option<BreakerHandle>,
    /// The bulkhead's controller: stats, pressure.
    pub bulkhead: Option<AdmissionController>,
}

impl StackHandles {
    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
