//! tonic in one line, server side, over a real tonic server and a generated client on
//! 127.0.0.1: a stack from its config with `.for_tonic()` in `Server::builder().layer(..)`,
//! its refusals answered as gRPC statuses with `retry-after` metadata.
#![cfg(feature = "grpc")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use switchyard::grpc::ForTonic;
use switchyard::prelude::{ResilienceConfig, ResilienceLayer};
use switchyard::resilience::Pattern;
use switchyard_stream::demo::ledger_client::LedgerClient;
use switchyard_stream::demo::ledger_server::{Ledger, LedgerServer};
use switchyard_stream::demo::{Entry, Posted};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};

/// A ledger that counts its calls and fails the first `failures` with `UNAVAILABLE`.
struct Flaky {
    calls: Arc<AtomicU32>,
    failures: u32,
}

#[tonic::async_trait]
impl Ledger for Flaky {
    async fn post(&self, request: Request<Streaming<Entry>>) -> Result<Response<Posted>, Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(Status::unavailable("ledger down"));
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
}

/// Serves a ledger behind the stack `config` describes (streaming rules: the ledger's one
/// method is a client stream) and connects a generated client to it.
async fn serve(
    config: &str,
    failures: u32,
) -> (LedgerClient<tonic::transport::Channel>, Arc<AtomicU32>) {
    let config = ResilienceConfig::from_json(config).expect("a valid config");
    let stack = ResilienceLayer::grpc("ledger", &config)
        .expect("a stack")
        .for_pattern(Pattern::Duplex);
    let calls = Arc::new(AtomicU32::new(0));
    let ledger = Flaky {
        calls: Arc::clone(&calls),
        failures,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(stack.for_tonic())
            .add_service(LedgerServer::new(ledger))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
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
