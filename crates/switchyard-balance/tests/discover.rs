//! Endpoints following a `tower::discover::Discover` stream.

mod support;

use switchyard_balance::{Balance, EndpointConfig, Strategy};

use support::{Req, call, ok};

#[tokio::test]
async fn endpoints_follow_a_discover_stream() {
    use tower::discover::Change;
    let balance: Balance<Req, String> = Balance::new("test", Strategy::RoundRobin);
    let changes = futures::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(Change::Insert("a", ok("a"))),
        Ok(Change::Insert("b", ok("b"))),
        Ok(Change::Insert("c", ok("c"))),
        Ok(Change::Remove("a")),
        // A known key again: a new service, the same endpoint (its health stays).
        Ok(Change::Insert("b", ok("b2"))),
    ]);
    let discovery = balance.follow(changes, EndpointConfig::default()).unwrap();
    for _ in 0..100 {
        if !discovery.is_running() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!discovery.is_running(), "the stream was consumed");
    assert_eq!(balance.eligible(), ["b", "c"]);
    assert_eq!(call(&balance, None).await.unwrap(), "b2");
    assert_eq!(call(&balance, None).await.unwrap(), "c");
}
