//! tonic in one line, over a real tonic server and a generated client on 127.0.0.1. Server
//! side: a stack from its config with `.for_tonic()` in `Server::builder().layer(..)`, its
//! refusals answered as gRPC statuses with `retry-after` metadata. Client side: a stack with
//! `.for_tonic_client()` around the `Channel`, retrying by gRPC status only what it can replay.
#![cfg(feature = "grpc")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use switchyard::grpc::ForTonic;
use switchyard::prelude::{ResilienceConfig, ResilienceLayer};
use switchyard::resilience::Pattern;
use switchyard_stream::demo::ledger_client::LedgerClient;
use switchyard_stream::demo::ledger_server::{Ledger, LedgerServer};
use switchyard_stream::demo::{Account, AccountBalance, Entry, Posted};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};

/// A ledger that counts its calls and fails the first `failures` with `code`.
struct Flaky {
    calls: Arc<AtomicU32>,
    failures: u32,
    code: Code,
}

#[tonic::async_trait]
impl Ledger for Flaky {
    async fn post(&self, request: Request<Streaming<Entry>>) -> Result<Response<Posted>, Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(Status::new(self.code, "ledger down"));
        }
        let mut entries = request.into_inner();
        let mut received = 0;
        while entries.message().await?.is_some() {
            received += 1;
        }
        Ok(Response::new(Posted {
            received,
            ..Posted::default()
        }))
    }

    async fn balance(&self, request: Request<Account>) -> Result<Response<AccountBalance>, Status> {
        if request.get_ref().account == "slow" {
            // An hour of (paused) time: past any deadline.
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(Status::new(self.code, "ledger down"));
        }
        Ok(Response::new(AccountBalance {
            account: request.into_inner().account,
            balance: 42,
        }))
    }
}

fn acme() -> Account {
    Account {
        account: "acme".to_owned(),
    }
}

fn stack(
    config: &str,
) -> ResilienceLayer<
    switchyard::retry::http::HttpRetryLayer<switchyard::core::GrpcClassifier>,
    switchyard::core::GrpcClassifier,
> {
    let config = ResilienceConfig::from_json(config).expect("a valid config");
    ResilienceLayer::grpc("ledger", &config).expect("a stack")
}

/// Serves a ledger, failing its first `failures` calls with `code`, behind the stack `config`
/// describes (streaming rules: the ledger's one method is a client stream); returns the
/// channel to it and the ledger's call count.
async fn start(
    config: &str,
    failures: u32,
    code: Code,
) -> (tonic::transport::Channel, Arc<AtomicU32>) {
    let stack = stack(config).for_pattern(Pattern::Duplex);
    let calls = Arc::new(AtomicU32::new(0));
    let ledger = Flaky {
        calls: Arc::clone(&calls),
        failures,
        code,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(stack.for_tonic())
            .add_service(LedgerServer::new(ledger))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = connect(addr).await;
    (channel, calls)
}

/// A channel to the server at `addr`.
async fn connect(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A generated client straight on the channel to a ledger behind the server stack `config`.
async fn serve(
    config: &str,
    failures: u32,
) -> (LedgerClient<tonic::transport::Channel>, Arc<AtomicU32>) {
    let (channel, calls) = start(config, failures, Code::Unavailable).await;
    (LedgerClient::new(channel), calls)
}

fn entries(n: u64) -> impl futures::Stream<Item = Entry> + Send + 'static {
    futures::stream::iter((1..=n).map(|number| Entry {
        account: "acme".to_owned(),
        amount: 10,
        number,
    }))
}

#[tokio::test]
async fn past_the_rate_limit_a_call_is_resource_exhausted_with_retry_after() {
    let (mut client, calls) = serve(r#"{"rate_limit": {"rate": "1/m"}}"#, 0).await;
    let posted = client
        .post(entries(3))
        .await
        .expect("the first call passes");
    assert_eq!(
        posted.into_inner().received,
        3,
        "the stream went through whole"
    );

    let refused = client.post(entries(3)).await.expect_err("past 1 a minute");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry_after: u64 = refused
        .metadata()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the service saw only the first"
    );
}

#[tokio::test]
async fn unavailable_answers_trip_the_breaker_which_then_refuses_with_retry_after() {
    let breaker = r#"{"circuit_breaker": {"trip": {"consecutive_failures": {"threshold": 2}},
                                         "wait_in_open": "1m"}}"#;
    let (mut client, calls) = serve(breaker, u32::MAX).await;
    for _ in 0..2 {
        let failed = client
            .post(entries(1))
            .await
            .expect_err("the ledger is down");
        assert_eq!(
            (failed.code(), failed.message()),
            (Code::Unavailable, "ledger down")
        );
    }
    // Judged by their grpc-status (the classifier), the two failures opened the breaker.
    let open = client.post(entries(1)).await.expect_err("open");
    assert_eq!(open.code(), Code::Unavailable);
    assert_ne!(
        open.message(),
        "ledger down",
        "refused by the breaker, not the ledger"
    );
    assert!(open.metadata().get("retry-after").is_some(), "{open:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the ledger saw nothing more"
    );
}

/// A generated client over the channel with the client-side stack `config` describes.
fn ledger_client(
    channel: tonic::transport::Channel,
    config: &str,
) -> LedgerClient<
    impl tonic::client::GrpcService<
        tonic::body::Body,
        ResponseBody = tonic::body::Body,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static,
> {
    LedgerClient::new(
        tower::ServiceBuilder::new()
            .layer(stack(config).for_tonic_client())
            .service(channel),
    )
}

/// The client-side stack: retries by gRPC status, every method being a `POST`.
const CLIENT_RETRY: &str = r#"{"retry": {"max_attempts": 3, "methods": ["POST"],
                                          "backoff": {"initial": "1ms"}, "jitter": "none"}}"#;

#[tokio::test]
async fn a_client_stack_retries_unavailable_and_not_invalid_argument() {
    let (channel, calls) = start("{}", 2, Code::Unavailable).await;
    let mut client = ledger_client(channel, CLIENT_RETRY);
    // A unary call, replayed through two UNAVAILABLEs.
    let balance = client.balance(acme()).await.expect("retried to success");
    assert_eq!(balance.into_inner().balance, 42);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // A client stream whole when sent is a request like a unary one: replayed whole too.
    let (channel, calls) = start("{}", 1, Code::Unavailable).await;
    let mut client = ledger_client(channel, CLIENT_RETRY);
    let posted = client.post(entries(3)).await.expect("retried to success");
    assert_eq!(
        posted.into_inner().received,
        3,
        "the replayed stream arrived whole"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let (channel, calls) = start("{}", 1, Code::InvalidArgument).await;
    let mut client = ledger_client(channel, CLIENT_RETRY);
    let refused = client.balance(acme()).await.expect_err("a caller's error");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn a_stream_still_being_written_goes_through_unretried_and_is_never_held_back() {
    let (channel, calls) = start("{}", 1, Code::Unavailable).await;
    let mut client = ledger_client(channel, CLIENT_RETRY);
    // Nothing written yet when the call opens: a waiting retry would wait for this stream to
    // end before sending anything, and the server would never see the call.
    let (tx, rx) = futures::channel::mpsc::channel::<Entry>(1);
    // The bound only turns a call held back into a failure instead of a hang.
    let call = tokio::time::timeout(std::time::Duration::from_secs(10), client.post(rx));
    let failed = call
        .await
        .expect("a waiting retry held the call back")
        .expect_err("the ledger refuses the first call");
    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "sent at once, and not retried"
    );
    drop(tx);
}

#[tokio::test]
async fn a_client_side_refusal_reaches_the_generated_client_as_its_status() {
    let (channel, calls) = start("{}", 0, Code::Unavailable).await;
    let mut client = ledger_client(channel, r#"{"rate_limit": {"rate": "1/m"}}"#);
    client.post(entries(1)).await.expect("within the quota");
    let limited = client.post(entries(1)).await.expect_err("past 1 a minute");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(limited.metadata().get("retry-after").is_some());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "refused before the channel"
    );
}

#[tokio::test]
async fn one_service_of_a_server_gets_its_own_stack() {
    let stack = stack(r#"{"rate_limit": {"rate": "1/m"}}"#).for_tonic();
    let calls = Arc::new(AtomicU32::new(0));
    let ledger = Flaky {
        calls: Arc::clone(&calls),
        failures: 0,
        code: Code::Unavailable,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            // Under the ledger's own name: `add_service` routes `/ledger.Ledger/*` to it.
            .add_service(stack.around(LedgerServer::new(ledger)))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = connect(addr).await;
    let mut client = LedgerClient::new(channel);
    assert_eq!(
        client.balance(acme()).await.unwrap().into_inner().balance,
        42
    );
    let limited = client.balance(acme()).await.expect_err("past 1 a minute");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Paused time: the slow account's hour is virtual, the deadline passes first.
#[tokio::test(start_paused = true)]
async fn past_its_deadline_a_call_is_deadline_exceeded() {
    let (channel, _) = start(r#"{"timeout": "2s"}"#, 0, Code::Unavailable).await;
    let mut client = LedgerClient::new(channel);
    let slow = Account {
        account: "slow".to_owned(),
    };
    let late = client.balance(slow).await.expect_err("past 2 s");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert_eq!(
        client.balance(acme()).await.unwrap().into_inner().balance,
        42
    );
}
