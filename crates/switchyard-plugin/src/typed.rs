//! The typed front: `Plugin<S, Req, Resp>` turns a raw plugin service (`PluginRequest` in,
//! `PluginResponse` out) into one of `Req` in and `Resp` out, as the protocol's generic
//! `Plugin[Req, Resp]` is: the request serialised into the call's data, the answer's data
//! deserialised.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{BoxError, Layer, Service};

use crate::context::{ExecutionContext, PluginRequest, PluginResponse};

/// The request or the answer did not fit its type.
#[derive(Debug)]
pub enum CodecError {
    /// The request did not serialise to JSON.
    Encode(serde_json::Error),
    /// The answer's data is not a `Resp`.
    Decode(serde_json::Error),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encode(e) => write!(f, "the request does not serialise: {e}"),
            Self::Decode(e) => write!(f, "the plugin's answer is not of the expected type: {e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode(e) | Self::Decode(e) => Some(e),
        }
    }
}

/// Makes [`Plugin`]s: `ServiceBuilder::new().layer(PluginLayer::<Req, Resp>::new()).service(raw)`.
pub struct PluginLayer<Req, Resp> {
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> PluginLayer<Req, Resp> {
    /// The layer.
    pub fn new() -> Self {
        Self { types: PhantomData }
    }
}

impl<Req, Resp> Default for PluginLayer<Req, Resp> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req, Resp> Clone for PluginLayer<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<Req, Resp> fmt::Debug for PluginLayer<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLayer").finish()
    }
}

impl<S, Req, Resp> Layer<S> for PluginLayer<Req, Resp> {
    type Service = Plugin<S, Req, Resp>;

    fn layer(&self, inner: S) -> Self::Service {
        Plugin::new(inner)
    }
}

/// A typed plugin over the raw service `S`. Calls take `Req` (with a fresh context) or
/// `(ExecutionContext, Req)` (a request id is made if the context has none).
pub struct Plugin<S, Req, Resp> {
    inner: S,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<S, Req, Resp> Plugin<S, Req, Resp> {
    /// `inner`, typed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            types: PhantomData,
        }
    }

    /// The raw service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The raw service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, Req, Resp> Clone for Plugin<S, Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S: fmt::Debug, Req, Resp> fmt::Debug for Plugin<S, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, Req, Resp> Service<(ExecutionContext, Req)> for Plugin<S, Req, Resp>
where
    S: Service<PluginRequest, Response = PluginResponse>,
    S::Error: Into<BoxError>,
    Req: Serialize,
    Resp: DeserializeOwned,
{
    type Response = Resp;
    type Error = BoxError;
    type Future = PluginFuture<S::Future, Resp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, (mut ctx, request): (ExecutionContext, Req)) -> Self::Future {
        ctx.ensure_request_id();
        let state = match serde_json::value::to_raw_value(&request) {
            Ok(data) => State::Called {
                future: self.inner.call(PluginRequest { ctx, data }),
            },
            Err(e) => State::Failed {
                error: Some(CodecError::Encode(e)),
            },
        };
        PluginFuture {
            state,
            types: PhantomData,
        }
    }
}

impl<S, Req, Resp> Service<Req> for Plugin<S, Req, Resp>
where
    S: Service<PluginRequest, Response = PluginResponse>,
    S::Error: Into<BoxError>,
    Req: Serialize,
    Resp: DeserializeOwned,
{
    type Response = Resp;
    type Error = BoxError;
    type Future = PluginFuture<S::Future, Resp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        Service::<(ExecutionContext, Req)>::call(self, (ExecutionContext::new(), request))
    }
}

pin_project! {
    /// The future of a [`Plugin`] call.
    pub struct PluginFuture<F, Resp> {
        #[pin]
        state: State<F>,
        types: PhantomData<fn() -> Resp>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Failed { error: Option<CodecError> },
    }
}

impl<F, E, Resp> Future for PluginFuture<F, Resp>
where
    F: Future<Output = Result<PluginResponse, E>>,
    E: Into<BoxError>,
    Resp: DeserializeOwned,
{
    type Output = Result<Resp, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                Poll::Ready(
                    response
                        .decode()
                        .map_err(|e| BoxError::from(CodecError::Decode(e))),
                )
            }
            StateProj::Failed { error } => Poll::Ready(Err(Box::new(
                error.take().expect("polled after completion"),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use tower::{ServiceExt, service_fn};

    use super::*;

    #[derive(Serialize)]
    struct Validate {
        user_id: String,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Verdict {
        valid: bool,
        user_id: String,
    }

    /// A raw plugin answering `{"valid": true, "user_id": ..}` for the request's user, or data
    /// that is not a verdict for user "bad".
    fn raw() -> impl Service<PluginRequest, Response = PluginResponse, Error = BoxError> + Clone {
        service_fn(|request: PluginRequest| async move {
            assert!(
                !request.ctx.request_id.is_empty(),
                "a request id is always made"
            );
            let input: serde_json::Value = serde_json::from_str(request.data.get())?;
            let user = input["user_id"].as_str().unwrap_or_default().to_owned();
            let data = if user == "bad" {
                serde_json::value::to_raw_value(&"not a verdict")?
            } else {
                serde_json::value::to_raw_value(
                    &serde_json::json!({"valid": true, "user_id": user}),
                )?
            };
            Ok(PluginResponse {
                data,
                metadata: BTreeMap::new(),
            })
        })
    }

    #[tokio::test]
    async fn typed_calls_encode_the_request_and_decode_the_answer() {
        let plugin = PluginLayer::<Validate, Verdict>::new().layer(raw());
        let verdict = plugin
            .clone()
            .oneshot(Validate {
                user_id: "u1".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            verdict,
            Verdict {
                valid: true,
                user_id: "u1".into()
            }
        );

        let ctx = ExecutionContext::default().with_header("X-Trace-ID", "t");
        let verdict = plugin
            .clone()
            .oneshot((
                ctx,
                Validate {
                    user_id: "u2".into(),
                },
            ))
            .await
            .unwrap();
        assert_eq!(verdict.user_id, "u2");

        let err = plugin
            .oneshot(Validate {
                user_id: "bad".into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<CodecError>(),
                Some(CodecError::Decode(_))
            ),
            "{err}"
        );
    }
}
