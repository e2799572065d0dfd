//! A real tonic server and client on 127.0.0.1: the client streams 10,000 entries over 50
//! accounts; the server runs them through a keyed-FIFO pipeline, applies each account's
//! entries in the order they were sent, and answers the summary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_stream::demo::ledger_client::LedgerClient;
use switchyard_stream::demo::ledger_server::{Ledger, LedgerServer};
use switchyard_stream::demo::{AccountBalance, Entry, Posted};
use switchyard_stream::{Message, Pipeline, StreamConfig};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tower::{BoxError, service_fn};

#[derive(Debug, Default)]
struct Account {
    last: u64,
    balance: i64,
    out_of_order: u64,
}

type Accounts = Arc<Mutex<HashMap<String, Account>>>;

struct Books {
    pipeline: Pipeline<Entry>,
}

#[tonic::async_trait]
impl Ledger for Books {
    async fn post(&self, request: Request<Streaming<Entry>>) -> Result<Response<Posted>, Status> {
        let summary = self.pipeline.run(request.into_inner()).await;
        summary.status()?;
        Ok(Response::new(Posted::from(&summary)))
    }

    async fn balance(
        &self,
        _: Request<switchyard_stream::demo::Account>,
    ) -> Result<Response<AccountBalance>, Status> {
        Err(Status::unimplemented("this test only posts"))
    }
}

/// Applies an entry to its account, noting one that arrives out of order. Entries whose
/// amount is negative fail on their first attempt (a retryable handler error).
fn books(accounts: &Accounts) -> Pipeline<Entry> {
    let accounts = Arc::clone(accounts);
    let handler = service_fn(move |m: Message<Entry>| {
        let accounts = Arc::clone(&accounts);
        async move {
            // Yield, so accounts interleave on the runtime.
            tokio::task::yield_now().await;
            if m.item.amount < 0 && m.attempt == 1 {
                return Err::<(), BoxError>("overdraft check timed out".into());
            }
            let mut accounts = accounts.lock().unwrap();
            let account = accounts.entry(m.item.account.clone()).or_default();
            if m.item.number != account.last + 1 {
                account.out_of_order += 1;
            }
            account.last = m.item.number;
            account.balance += m.item.amount;
            Ok(())
        }
    });
    let options = StreamConfig::from_json(
        r#"{ "ordering": { "mode": "keyed_fifo" },
             "backpressure": { "policy": "queue", "capacity": 16 },
             "retry": { "max_attempts": 2, "backoff": "1ms" } }"#,
    )
    .unwrap();
    Pipeline::keyed("ledger", options, handler, |e: &Entry| e.account.as_str()).unwrap()
}

/// Serves the ledger with `pipeline` on 127.0.0.1 and connects a client to it.
async fn serve(
    pipeline: Pipeline<Entry>,
) -> (
    LedgerClient<tonic::transport::Channel>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LedgerServer::new(Books { pipeline }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (LedgerClient::new(channel), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_entries_are_applied_in_per_account_order() {
    let accounts = Accounts::default();
    let (mut client, server) = serve(books(&accounts)).await;
    let mut numbers: HashMap<String, u64> = HashMap::new();
    let entries: Vec<Entry> = (0..10_000u64)
        .map(|i| {
            let account = format!("acct-{}", (i * 7919) % 50);
            let number = numbers.entry(account.clone()).or_default();
            *number += 1;
            Entry {
                account,
                amount: if i % 97 == 0 { -1 } else { 2 },
                number: *number,
            }
        })
        .collect();
    let expected: HashMap<String, i64> = entries.iter().fold(HashMap::new(), |mut sums, e| {
        *sums.entry(e.account.clone()).or_default() += e.amount;
        sums
    });

    let posted = client
        .post(futures::stream::iter(entries))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(posted.received, 10_000);
    assert_eq!(posted.succeeded, 10_000, "{:?}", posted.failures);
    assert_eq!(posted.retries, 104, "every negative entry retried once");
    assert!(!posted.ordering_broken);

    let accounts = accounts.lock().unwrap();
    assert_eq!(accounts.len(), 50);
    for (name, account) in accounts.iter() {
        assert_eq!(account.out_of_order, 0, "{name} applied out of order");
        assert_eq!(account.last, numbers[name], "{name} missed entries");
        assert_eq!(account.balance, expected[name], "{name}'s balance");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_pipeline_answers_unavailable() {
    let accounts = Accounts::default();
    let pipeline = books(&accounts);
    pipeline.shutdown().await;
    let (mut client, server) = serve(pipeline).await;
    let entry = Entry {
        account: "a".into(),
        amount: 1,
        number: 1,
    };
    let status = client
        .post(futures::stream::iter(vec![entry]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(accounts.lock().unwrap().is_empty());
    server.abort();
}
