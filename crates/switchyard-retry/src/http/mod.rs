//! Retrying `http::Request`s, which are not `Clone`: the body is buffered for replay up to a
//! size, and only idempotent methods (or requests marked [`Idempotent`]) are sent again.
//!
//! [`HttpRetryLayer`] is two layers in one: [`BufferBody`] reads the request body into a
//! [`ReplayBody`] (up to `max_body_bytes`, 64 KiB by default), then tower's `Retry` with a
//! [`RetryPolicy`] over [`HttpReplay`] retries. The inner service therefore receives
//! `http::Request<ReplayBody<B>>` — a hyper-util client's body type can be `ReplayBody<B>`; a tonic
//! `Channel` wants its own body type, so map it in between (`tower::util::MapRequestLayer::new(|r:
//! http::Request<ReplayBody<_>>| r.map(tonic::body::Body::new))`) — and its errors must be
//! `BoxError` (`tower::util::MapErrLayer::new(Into::into)` below, for a client whose error type is
//! its own).
//!
//! # Bodies are read before the first attempt
//!
//! A retried request's body (up to `max_body_bytes`) is read in full before it is sent, so its
//! first attempt starts once the body has arrived. A call whose client waits for a response
//! before ending its request body — a gRPC bidirectional or interactive client stream — would
//! wait forever: never send such calls through a waiting retry (leave their method out of
//! `methods`, build their stack with `Pattern::Duplex`, which has no retry and buffers
//! nothing, or use [`HttpRetryLayer::only_ready_bodies`], which keeps only what a body yields
//! without waiting and streams the rest unretried — what a gRPC client stack does).
//!
//! # What is retried
//!
//! - Methods: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE` (RFC 9110's idempotent ones)
//!   by default; `config.methods` replaces the list, and a request carrying the [`Idempotent`]
//!   extension is retried whatever its method (mark a `POST` that carries an idempotency key).
//! - Bodies up to `max_body_bytes`; a larger one streams through untouched and its call is not
//!   retried (`switchyard_retry_unreplayable_total{reason="body_too_large"}`).
//! - Responses the classifier calls failures: 5xx but 501, and 429, by default, after the
//!   response's `Retry-After` (in seconds) if it asks for longer than the backoff.
//!
//! # gRPC
//!
//! The decision is made on the response head (its status, or the `grpc-status` of a
//! trailers-only response with `GrpcClassifier`): a call is never retried once its first
//! response message has reached the caller, because the caller has the response by then. gRPC
//! calls are all `POST`: add `"POST"` to `methods` for a client whose every method may be
//! repeated, or mark the idempotent ones with [`Idempotent`] in an interceptor.

mod body;
mod buffer;

use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, Method, Request, Response, StatusCode};
use switchyard_core::{ConfigError, HttpClassifier};
use tower::Layer;
use tower::util::Either;

pub use self::body::ReplayBody;
pub use self::buffer::{BufferBody, BufferBodyFuture};
use crate::config::RetryConfig;
use crate::layer::RetryLayer;
use crate::policy::{NotRetried, Replay, RetryPolicy};

/// A request extension: this request may be sent more than once whatever its method (it
/// carries an idempotency key, or the operation is idempotent by design).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Idempotent;

/// Replays `http::Request<ReplayBody<B>>`s: the ones whose method is retried (or that are
/// marked [`Idempotent`]) and whose body was kept; reads `Retry-After` from responses.
#[derive(Debug, Clone)]
pub struct HttpReplay {
    methods: Arc<[Method]>,
}

impl HttpReplay {
    /// Replays requests of `config.methods`, which must have been validated.
    fn new(config: &RetryConfig) -> Self {
        Self {
            methods: config
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
        }
    }

    /// Whether a request with this method and these extensions may be sent again.
    pub(crate) fn allows(&self, method: &Method, extensions: &Extensions) -> bool {
        self.methods.contains(method) || extensions.get::<Idempotent>().is_some()
    }
}

impl<B, ResB> Replay<Request<ReplayBody<B>>, Response<ResB>> for HttpReplay {
    fn replay(&self, req: &Request<ReplayBody<B>>) -> Result<Request<ReplayBody<B>>, NotRetried> {
        if !self.allows(req.method(), req.extensions()) {
            return Err(NotRetried::NotIdempotent);
        }
        let body = req.body().try_clone().ok_or(NotRetried::BodyTooLarge)?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Ok(copy)
    }

    fn retry_after(&self, response: &Response<ResB>) -> Option<Duration> {
        // Delay-seconds only; an HTTP-date is ignored (the backoff applies).
        let value = response.headers().get(http::header::RETRY_AFTER)?;
        let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds))
    }
}

/// The default HTTP classifier for retries: 5xx but `501 Not Implemented`, and `429 Too Many
/// Requests`.
pub fn default_classifier() -> HttpClassifier {
    HttpClassifier::server_errors()
        .with_failure(StatusCode::TOO_MANY_REQUESTS)
        .with_ignored(StatusCode::NOT_IMPLEMENTED)
}

/// Retries `http::Request`s: buffers bodies for replay, then retries as a [`RetryLayer`] does.
/// See the [module docs](self) for what is retried.
///
/// A [`disabled`](Self::disabled) layer retries nothing and buffers nothing, but still hands
/// the inner service a `ReplayBody` (streaming), so that a stack is one type whether or not
/// its config retries.
#[derive(Debug, Clone)]
pub struct HttpRetryLayer<C = HttpClassifier> {
    retry: Option<RetryLayer<C, HttpReplay>>,
    max_body_bytes: usize,
    wait_for_bodies: bool,
}

impl HttpRetryLayer {
    /// An HTTP retry named `name` (in metrics and events) as `config` describes, classifying
    /// responses with [`default_classifier`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(name: impl Into<Arc<str>>, config: &RetryConfig) -> Result<Self, ConfigError> {
        let retry = RetryLayer::new(name, config)?;
        if config.max_attempts == 1 {
            // Nothing will be retried: buffer nothing either.
            return Ok(Self::disabled());
        }
        let retry = retry
            .with_classifier(default_classifier())
            .with_replay(HttpReplay::new(config));
        Ok(Self {
            retry: Some(retry),
            max_body_bytes: config.max_body_bytes,
            wait_for_bodies: true,
        })
    }

    /// A layer that retries nothing: bodies pass through as streaming `ReplayBody`s.
    pub fn disabled() -> Self {
        Self {
            retry: None,
            max_body_bytes: 0,
            wait_for_bodies: true,
        }
    }
}

impl<C> HttpRetryLayer<C> {
    /// Classifies responses and errors with `classifier` instead (a failure is retried).
    pub fn with_classifier<C2>(self, classifier: C2) -> HttpRetryLayer<C2> {
        HttpRetryLayer {
            retry: self.retry.map(|r| r.with_classifier(classifier)),
            max_body_bytes: self.max_body_bytes,
            wait_for_bodies: self.wait_for_bodies,
        }
    }

    /// Seeds the jitter's random source, for reproducible delays in tests.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        Self {
            retry: self.retry.map(|r| r.with_seed(seed)),
            ..self
        }
    }

    /// Keeps for replay only what a request body yields without waiting: a body that makes
    /// the call wait is sent on as it comes, and its call is not retried. For gRPC, where a
    /// unary request is whole at once and a bidirectional stream is not: with this, a retrying
    /// stack never holds back a stream whose client waits for the answer before ending it.
    #[must_use]
    pub fn only_ready_bodies(self) -> Self {
        Self {
            wait_for_bodies: false,
            ..self
        }
    }

    /// This layer with retries turned off (see [`disabled`](HttpRetryLayer::disabled)).
    #[must_use]
    pub fn without_retry(self) -> Self {
        Self {
            retry: None,
            max_body_bytes: 0,
            wait_for_bodies: self.wait_for_bodies,
        }
    }

    /// Whether the layer retries.
    pub fn is_enabled(&self) -> bool {
        self.retry.is_some()
    }
}

impl<S, C: Clone> Layer<S> for HttpRetryLayer<C> {
    type Service = BufferBody<Either<tower::retry::Retry<RetryPolicy<C, HttpReplay>, S>, S>>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.retry {
            Some(retry) => BufferBody::new(
                Either::Left(retry.layer(inner)),
                Some(retry.replay().clone()),
                self.max_body_bytes,
                self.wait_for_bodies,
            ),
            None => BufferBody::new(Either::Right(inner), None, 0, true),
        }
    }
}
