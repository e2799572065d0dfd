//! Retrying `http::Request`s: replayed bodies, idempotent methods, the body-size limit, and
//! `Retry-After`, under paused tokio time.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use switchyard_core::BoxError;
use switchyard_retry::http::{HttpRetryLayer, Idempotent, ReplayBody};
use switchyard_retry::{BackoffConfig, Jitter, RetryConfig};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A body of several chunks whose size is unknown until read, as a streamed upload's.
struct Chunks(VecDeque<Bytes>);

impl Chunks {
    fn new(chunks: &[&'static str]) -> Self {
        Self(
            chunks
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
        )
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// What the backend saw of each attempt: method, body, and when (from the start).
type Seen = Arc<Mutex<Vec<(Method, String, Duration)>>>;

/// A backend answering `statuses` in turn (the last repeats), with `Retry-After: 2` on 503s,
/// and noting each attempt.
fn backend<B>(
    statuses: &'static [u16],
) -> (
    impl Service<Request<ReplayBody<B>>, Response = Response<String>, Error = BoxError> + Clone,
    Seen,
)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let seen: Seen = Arc::default();
    let start = Instant::now();
    let log = Arc::clone(&seen);
    let svc = service_fn(move |req: Request<ReplayBody<B>>| {
        let log = Arc::clone(&log);
        async move {
            let method = req.method().clone();
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(Into::into)?
                .to_bytes();
            let mut seen = log.lock().unwrap();
            let status = statuses[seen.len().min(statuses.len() - 1)];
            seen.push((
                method,
                String::from_utf8_lossy(&body).into_owned(),
                start.elapsed(),
            ));
            let mut response = Response::builder().status(status);
            if status == 503 {
                response = response.header("retry-after", "2");
            }
            Ok::<_, BoxError>(response.body(String::new()).unwrap())
        }
    });
    (svc, seen)
}

fn layer(max_body_bytes: usize) -> HttpRetryLayer {
    let config = RetryConfig {
        max_body_bytes,
        ..RetryConfig::new(3)
            .with_backoff(BackoffConfig::constant(Duration::from_millis(100)))
            .with_jitter(Jitter::None)
            .with_budget(None)
    };
    HttpRetryLayer::new("upstream", &config).unwrap()
}

fn request<B>(method: Method, body: B) -> Request<B> {
    Request::builder()
        .method(method)
        .uri("http://upstream/items")
        .body(body)
        .unwrap()
}

async fn send<S, B>(svc: &mut S, req: Request<B>) -> StatusCode
where
    S: Service<Request<B>, Response = Response<String>, Error = BoxError>,
{
    svc.ready().await.unwrap().call(req).await.unwrap().status()
}

#[tokio::test(start_paused = true)]
async fn a_put_is_retried_with_the_same_body_each_time() {
    let (inner, seen) = backend::<Full<Bytes>>(&[500, 500, 200]);
    let mut svc = layer(1024).layer(inner);
    let status = send(
        &mut svc,
        request(Method::PUT, Full::new(Bytes::from("qty=3"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(m, body, _)| *m == Method::PUT && body == "qty=3"),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_within_the_limit_is_replayed_whole() {
    let (inner, seen) = backend::<Chunks>(&[502, 200]);
    let mut svc = layer(1024).layer(inner);
    let body = Chunks::new(&["a=1", "&b=2", "&c=3"]);
    assert_eq!(
        send(&mut svc, request(Method::DELETE, body)).await,
        StatusCode::OK
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["a=1&b=2&c=3"; 2]
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_by_default() {
    let (inner, seen) = backend::<Full<Bytes>>(&[500, 200]);
    let mut svc = layer(1024).layer(inner);
    let status = send(
        &mut svc,
        request(Method::POST, Full::new(Bytes::from("order"))),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_marked_idempotent_is_retried() {
    let (inner, seen) = backend::<Full<Bytes>>(&[500, 200]);
    let mut svc = layer(1024).layer(inner);
    let mut req = request(Method::POST, Full::new(Bytes::from("order")));
    req.extensions_mut().insert(Idempotent);
    assert_eq!(send(&mut svc, req).await, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_method_added_in_config_is_retried() {
    let (inner, seen) = backend::<Full<Bytes>>(&[500, 200]);
    let config = RetryConfig {
        methods: vec!["POST".to_owned()],
        ..RetryConfig::new(2).with_jitter(Jitter::None)
    };
    let mut svc = HttpRetryLayer::new("grpc", &config).unwrap().layer(inner);
    assert_eq!(
        send(&mut svc, request(Method::POST, Full::new(Bytes::new()))).await,
        StatusCode::OK
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_whole_and_not_retried() {
    let (inner, seen) = backend::<Chunks>(&[500, 200]);
    let mut svc = layer(8).layer(inner);
    let body = Chunks::new(&["0123", "4567", "89ab", "cdef"]);
    let status = send(&mut svc, request(Method::PUT, body)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "not retried");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].1, "0123456789abcdef",
        "the bytes read first, then the rest"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_announcing_more_than_the_limit_is_passed_on_without_reading() {
    let (inner, seen) = backend::<Full<Bytes>>(&[500, 200]);
    let mut svc = layer(4).layer(inner);
    let status = send(
        &mut svc,
        request(Method::PUT, Full::new(Bytes::from("too long"))),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(seen.lock().unwrap()[0].1, "too long");
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_a_response_sets_the_delay() {
    let (inner, seen) = backend::<Full<Bytes>>(&[503, 200]);
    let mut svc = layer(1024).layer(inner);
    assert_eq!(
        send(&mut svc, request(Method::GET, Full::new(Bytes::new()))).await,
        StatusCode::OK
    );
    let times: Vec<_> = seen.lock().unwrap().iter().map(|s| s.2).collect();
    assert_eq!(
        times,
        [Duration::ZERO, Duration::from_secs(2)],
        "Retry-After: 2 over 100 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn not_implemented_and_client_errors_are_not_retried() {
    for status in [501, 404, 400] {
        let statuses: &'static [u16] = match status {
            501 => &[501, 200],
            404 => &[404, 200],
            _ => &[400, 200],
        };
        let (inner, seen) = backend::<Full<Bytes>>(statuses);
        let mut svc = layer(1024).layer(inner);
        send(&mut svc, request(Method::GET, Full::new(Bytes::new()))).await;
        assert_eq!(seen.lock().unwrap().len(), 1, "{status} was retried");
    }
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_is_retried() {
    let (inner, seen) = backend::<Full<Bytes>>(&[429, 200]);
    let mut svc = layer(1024).layer(inner);
    assert_eq!(
        send(&mut svc, request(Method::GET, Full::new(Bytes::new()))).await,
        StatusCode::OK
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_replay_body_keeps_trailers_and_copies_from_the_start() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let body =
        Full::new(Bytes::from("hello")).with_trailers(std::future::ready(Some(Ok(trailers))));
    // Read through the layer's service: the inner sees a replayable body with the trailers.
    let captured = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&captured);
    let mut svc = layer(1024).layer(service_fn(move |req: Request<ReplayBody<_>>| {
        let copy = req.body().try_clone();
        *keep.lock().unwrap() = copy;
        async { Ok::<_, BoxError>(Response::new(String::new())) }
    }));
    send(&mut svc, request(Method::GET, body)).await;
    let copy = captured.lock().unwrap().take().expect("replayable");
    let collected = copy.collect().await.unwrap();
    assert_eq!(
        collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .unwrap(),
        "0"
    );
    assert_eq!(collected.to_bytes(), "hello");
}

#[tokio::test(start_paused = true)]
async fn every_attempt_gets_the_whole_body_and_its_trailers() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let body =
        Full::new(Bytes::from("hello")).with_trailers(std::future::ready(Some(Ok(trailers))));
    // Each attempt's body and `x-checksum` trailer.
    type Attempts = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Attempts = Arc::default();
    let log = Arc::clone(&seen);
    let inner = service_fn(move |req: Request<ReplayBody<_>>| {
        let log = Arc::clone(&log);
        async move {
            let collected = req
                .into_body()
                .collect()
                .await
                .map_err(|e| -> BoxError { Box::new(e) })?;
            let checksum = collected
                .trailers()
                .and_then(|t| t.get("x-checksum"))
                .map(|v| v.to_str().unwrap().to_owned());
            let mut seen = log.lock().unwrap();
            seen.push((
                String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                checksum,
            ));
            let status = if seen.len() == 1 { 503 } else { 200 };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let mut svc = layer(1024).layer(inner);
    assert_eq!(
        send(&mut svc, request(Method::PUT, body)).await,
        StatusCode::OK
    );
    let expected = ("hello".to_owned(), Some("abc".to_owned()));
    assert_eq!(*seen.lock().unwrap(), [expected.clone(), expected]);
}

/// A body that makes its reader wait once before its one chunk, as a stream still being
/// written does.
struct Hesitant {
    waited: bool,
    chunk: Option<Bytes>,
}

impl Body for Hesitant {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.waited {
            self.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.chunk.take().map(|c| Ok(Frame::data(c))))
    }
}

#[tokio::test(start_paused = true)]
async fn only_ready_bodies_retries_a_whole_body_and_streams_one_that_waits() {
    let put = || Method::PUT;
    // Whole at once: kept and retried, as before.
    let (inner, seen) = backend::<Full<Bytes>>(&[503, 200]);
    let mut svc = layer(1024).only_ready_bodies().layer(inner);
    let status = send(&mut svc, request(put(), Full::new(Bytes::from("unary")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A body that makes the call wait: sent on as it comes, whole, and not retried.
    let (inner, seen) = backend::<Hesitant>(&[503, 200]);
    let mut svc = layer(1024).only_ready_bodies().layer(inner);
    let body = Hesitant {
        waited: false,
        chunk: Some(Bytes::from("stream")),
    };
    let status = send(&mut svc, request(put(), body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].1, "stream");
    }

    // The default waits for the same body, and retries it.
    let (inner, seen) = backend::<Hesitant>(&[503, 200]);
    let mut svc = layer(1024).layer(inner);
    let body = Hesitant {
        waited: false,
        chunk: Some(Bytes::from("stream")),
    };
    assert_eq!(send(&mut svc, request(put(), body)).await, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);
}
