//! The balancer as a tower `Service`, and in an `async` block that must be `Send`.

mod support;

use switchyard_balance::Strategy;
use tower::{Service, ServiceExt};

use support::{balance, call};

#[tokio::test]
async fn the_balancer_is_a_service() {
    let mut balance = balance(Strategy::RoundRobin, &["a"]);
    balance.ready().await.unwrap();
    assert_eq!(balance.call((None, 1)).await.unwrap(), "a");
}

#[tokio::test]
async fn an_async_block_awaiting_the_balancer_is_send() {
    // Endpoints failing with `BoxError`: the case rust-lang/rust#110338 breaks for balancers
    // whose `Service` impl is bounded on the endpoint's error type.
    let balance = balance(Strategy::RoundRobin, &["a"]);
    let task = tokio::spawn(async move { call(&balance, None).await });
    assert_eq!(task.await.unwrap().unwrap(), "a");
}
