//! A tonic ledger server whose client-streaming `Post` method runs each stream through a
//! keyed-FIFO pipeline: a client streams 10,000 entries over 100 accounts, the server applies
//! each account's entries in the order they were sent (accounts concurrently, at most 32
//! entries at once, a failed entry retried), and answers a summary.
//!
//! `cargo run --example stream --features stream`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use switchyard::stream::demo::ledger_client::LedgerClient;
use switchyard::stream::demo::ledger_server::{Ledger, LedgerServer};
use switchyard::stream::demo::{Account, AccountBalance, Entry, Posted};
use switchyard::stream::{Message, Pipeline, StreamConfig};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tower::{BoxError, service_fn};

/// Each account's last applied entry number and balance.
type Books = Arc<Mutex<HashMap<String, (u64, i64)>>>;

struct LedgerService {
    pipeline: Pipeline<Entry>,
    books: Books,
}

#[tonic::async_trait]
impl Ledger for LedgerService {
    async fn post(&self, request: Request<Streaming<Entry>>) -> Result<Response<Posted>, Status> {
        // The whole integration: hand the stream to the pipeline, answer its summary.
        let summary = self.pipeline.run(request.into_inner()).await;
        summary.status()?;
        Ok(Response::new(Posted::from(&summary)))
    }

    async fn balance(&self, request: Request<Account>) -> Result<Response<AccountBalance>, Status> {
        let account = request.into_inner().account;
        let balance = self.books.lock().unwrap().get(&account).map(|(_, b)| *b);
        match balance {
            Some(balance) => Ok(Response::new(AccountBalance { account, balance })),
            None => Err(Status::not_found(format!("no account {account}"))),
        }
    }
}

fn pipeline(books: &Books) -> Result<Pipeline<Entry>, BoxError> {
    let books = Arc::clone(books);
    // The handler is any tower Service<Message<Entry>>; this one applies an entry, failing the
    // first attempt of every 500th (a transient error the pipeline retries).
    let handler = service_fn(move |m: Message<Entry>| {
        let books = Arc::clone(&books);
        async move {
            tokio::time::sleep(Duration::from_micros(50)).await;
            if m.seq.is_multiple_of(500) && m.attempt == 1 {
                return Err::<(), BoxError>("ledger store busy".into());
            }
            let mut books = books.lock().unwrap();
            let (last, balance) = books.entry(m.item.account.clone()).or_default();
            if m.item.number != *last + 1 {
                return Err(format!("{} applied out of order", m.item.account).into());
            }
            *last = m.item.number;
            *balance += m.item.amount;
            Ok(())
        }
    });
    let options = StreamConfig::from_json(
        r#"{ "ordering": { "mode": "keyed_fifo", "capacity": 20000 },
             "backpressure": { "policy": "queue", "capacity": 32 },
             "retry": { "max_attempts": 3, "backoff": "5ms" },
             "shutdown": { "grace_period": "5s", "drain_on_close": true } }"#,
    )?;
    Ok(Pipeline::keyed("ledger", options, handler, |e: &Entry| {
        e.account.as_str()
    })?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let books = Books::default();
    let pipeline = pipeline(&books)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LedgerServer::new(LedgerService {
                pipeline: pipeline.clone(),
                books: Arc::clone(&books),
            }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    println!("ledger listening on {addr}");

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut numbers: HashMap<String, u64> = HashMap::new();
    let entries: Vec<Entry> = (0..10_000u64)
        .map(|i| {
            let account = format!("acct-{:03}", (i * 7919) % 100);
            let number = numbers.entry(account.clone()).or_default();
            *number += 1;
            Entry {
                account,
                amount: 10,
                number: *number,
            }
        })
        .collect();
    let started = Instant::now();
    let mut client = LedgerClient::new(channel);
    let posted = client
        .post(futures::stream::iter(entries))
        .await?
        .into_inner();
    println!(
        "posted in {:?}: received {}, succeeded {}, failed {}, rejected {}, retries {}, ordering broken: {}",
        started.elapsed(),
        posted.received,
        posted.succeeded,
        posted.failed,
        posted.rejected,
        posted.retries,
        posted.ordering_broken
    );
    for failure in posted.failures.iter().take(5) {
        println!(
            "  failed: #{} {} {}: {}",
            failure.seq, failure.account, failure.kind, failure.error
        );
    }
    let (accounts, in_order) = {
        let books = books.lock().unwrap();
        let in_order = books
            .iter()
            .all(|(account, (last, _))| *last == numbers[account]);
        (books.len(), in_order)
    };
    println!("{accounts} accounts, every account's entries applied in order: {in_order}");
    let acct = client
        .balance(Account {
            account: "acct-000".to_owned(),
        })
        .await?
        .into_inner();
    println!("{} balance: {}", acct.account, acct.balance);

    pipeline.shutdown().await;
    println!("pipeline shut down");
    Ok(())
}
