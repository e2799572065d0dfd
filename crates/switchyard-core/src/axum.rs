//! axum in one line: any switchyard layer, or a whole stack, straight into
//! `Router::route_layer`, `MethodRouter::layer` or `Router::layer`, and every failure as the
//! response core's mapping gives it.
//!
//! axum wants a layer's service to take `Request<Body>`, never fail (`Infallible`) and answer
//! `Response<Body>`; switchyard's layers fail with a typed rejection in a `BoxError` and may hand
//! the service below another body (a retry's replayable one). [`AxumLayer`] (or
//! [`ForAxum::for_axum`] on any layer) closes both gaps:
//!
//! - the request body on the way in and the response body on the way out become axum's
//!   [`Body`], whatever the layer hands over;
//! - a failure becomes a response: a [`Rejection`] by [`rejection_response`] (the kind's
//!   status, `Retry-After` when known, a JSON or plain-text body as [`ErrorFormat`] says), any
//!   other error a 500 that shows nothing of it (it is logged instead).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use switchyard_core::axum::ForAxum;
//! use tower::timeout::TimeoutLayer;
//! # use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app: Router = Router::new()
//!     .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await; "late" }))
//!     // Any tower layer that fails with a BoxError: here tower's own timeout.
//!     .route_layer(TimeoutLayer::new(Duration::from_millis(10)).for_axum());
//! let response = app
//!     .oneshot(axum::http::Request::get("/slow").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! // Not a rejection of switchyard's: a 500 that says nothing of the cause.
//! assert_eq!(response.status(), 500);
//! # }
//! ```

use std::error::Error;
use std::fmt;

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tower::BoxError;

use crate::adapt::{Adapt, Adapted, AdaptedFuture, Framework, FrameworkBody};
use crate::rejection::{Rejection, RejectionKind, find_rejection, retry_after_header};

/// The body of an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorFormat {
    /// `{"error": {"kind": "rate_limited", "message": "..."}}`, `application/json` (the
    /// gateway's shape, without its `service`).
    #[default]
    Json,
    /// The message alone, `text/plain`.
    Plain,
}

/// The response a rejection gets: its kind's status, `Retry-After` (whole seconds, rounded up)
/// when it knows when to retry, and its message in `format`. A panic's message is the
/// handler's internals: it is replaced by a generic one.
pub fn rejection_response(rejection: &dyn Rejection, format: ErrorFormat) -> Response {
    let kind = rejection.kind();
    let message = if kind == RejectionKind::Panic {
        "the handler panicked; see the server log".to_owned()
    } else {
        rejection.to_string()
    };
    let mut response = body(kind.http_status(), kind.as_str(), &message, format);
    if let Some(after) = retry_after_header(rejection) {
        response.headers_mut().insert(header::RETRY_AFTER, after);
    }
    response
}

/// The response any error gets: [`rejection_response`] for a rejection anywhere in its
/// `source()` chain; otherwise a 500 whose body says nothing of the cause, which is logged
/// (`tracing`, level error) for the operator instead.
pub fn error_response(error: &(dyn Error + 'static), format: ErrorFormat) -> Response {
    if let Some(rejection) = find_rejection(error) {
        if rejection.kind() == RejectionKind::Panic {
            tracing::error!(target: "switchyard", error = %rejection, "a handler panicked");
        }
        return rejection_response(rejection, format);
    }
    tracing::error!(target: "switchyard", %error, "request failed");
    body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
        format,
    )
}

fn body(status: StatusCode, kind: &str, message: &str, format: ErrorFormat) -> Response {
    let (content_type, text) = match format {
        ErrorFormat::Json => (
            "application/json",
            serde_json::json!({ "error": { "kind": kind, "message": message } }).to_string(),
        ),
        ErrorFormat::Plain => ("text/plain; charset=utf-8", message.to_owned()),
    };
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Any error as an axum response ([`error_response`], JSON), so a handler that calls a
/// switchyard service can use `?`: `async fn pay(..) -> Result<String, Rejected>`.
pub struct Rejected(BoxError);

impl Rejected {
    /// The error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Rejected").field(&self.0).finish()
    }
}

impl<E: Into<BoxError>> From<E> for Rejected {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        error_response(&*self.0, ErrorFormat::Json)
    }
}

/// axum, as an [`adapt`](crate::adapt) framework: its `Body`, failures by [`error_response`]
/// in the chosen [`ErrorFormat`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Axum {
    format: ErrorFormat,
}

impl Framework for Axum {
    type Body = Body;

    fn body<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body::new(body)
    }

    fn failure(&self, error: BoxError) -> Response {
        error_response(&*error, self.format)
    }
}

/// A layer made to fit axum: see the [module](self).
pub type AxumLayer<L> = Adapt<L, Axum>;
/// The service an [`AxumLayer`] builds: `Request<Body>` in, `Response` out, never an error.
pub type AxumService<T> = Adapted<T, Axum>;
/// The future of an [`AxumService`].
pub type AxumFuture<F> = AdaptedFuture<F, Axum>;
/// The service below an [`AxumLayer`]'s layer: axum's own, given an axum `Body`.
pub type ToAxumBody<S> = FrameworkBody<S, Axum>;

impl<L> AxumLayer<L> {
    /// `layer`, with failures as JSON error responses.
    pub fn new(layer: L) -> Self {
        Adapt::with(layer, Axum::default())
    }

    /// Renders failures in `format`.
    #[must_use]
    pub fn format(mut self, format: ErrorFormat) -> Self {
        self.framework_mut().format = format;
        self
    }
}

/// `.for_axum()` on any layer: the layer as an [`AxumLayer`].
pub trait ForAxum: Sized {
    /// This layer, ready for `Router::route_layer`, `MethodRouter::layer` or `Router::layer`.
    fn for_axum(self) -> AxumLayer<Self> {
        AxumLayer::new(self)
    }
}

impl<L> ForAxum for L {}

/// `IntoResponse` for rejection types, by [`rejection_response`] with a JSON body: what each
/// layer crate's `axum` feature implements for its own rejections, so a handler's `?` on one
/// answers its status.
#[macro_export]
macro_rules! rejection_into_response {
    ($($rejection:ty),+ $(,)?) => {$(
        impl $crate::axum::__private::IntoResponse for $rejection {
            fn into_response(self) -> $crate::axum::__private::Response {
                $crate::axum::rejection_response(&self, $crate::axum::ErrorFormat::Json)
            }
        }
    )+};
}

#[doc(hidden)]
pub mod __private {
    pub use axum_core::response::{IntoResponse, Response};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::tests::Limited;

    async fn text(response: Response) -> String {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_rejection_is_its_status_retry_after_and_a_json_or_plain_body() {
        let json = rejection_response(&Limited, ErrorFormat::Json);
        assert_eq!(json.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(json.headers()[header::RETRY_AFTER], "1");
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(&text(json).await).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"kind": "rate_limited", "message": "rate limited"}})
        );
        let plain = rejection_response(&Limited, ErrorFormat::Plain);
        assert_eq!(
            plain.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(text(plain).await, "rate limited");
    }

    #[tokio::test]
    async fn other_errors_are_a_500_that_shows_nothing_of_them() {
        crate::rejection::register::<Limited>();
        let secret: BoxError = "db password hunter2 rejected".into();
        let response = error_response(&*secret, ErrorFormat::Plain);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = text(response).await;
        assert!(!body.contains("hunter2"), "{body}");
        // A registered rejection is found under a wrapper.
        #[derive(Debug)]
        struct Outer(Limited);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the call failed")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped: BoxError = Box::new(Outer(Limited));
        let response = Rejected::from(wrapped).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
