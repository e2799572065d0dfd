//! The circuit breaker example, in tower terms.
//!
//! A breaker named `payments` trips after two failures and stays open for 100 ms; the service
//! behind it always fails. The first two calls reach the service and fail; the third is refused
//! by the breaker without reaching it. After the wait, a probe goes through again.
//!
//! Run it with `cargo run --example breaker`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchyard::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // Shows the breaker's transition events (target `switchyard_breaker`).
    tracing_subscriber::fmt().init();

    let config = CircuitBreakerConfig::new(Trip::consecutive_failures(2))
        .with_wait_in_open(Duration::from_millis(100));
    let breaker = CircuitBreakerLayer::new("payments", config)?;
    let handle = breaker.handle();

    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let mut payments =
        ServiceBuilder::new()
            .layer(breaker)
            .service(service_fn(move |amount: &'static str| {
                counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    Err::<String, BoxError>(format!("service down (charging {amount})").into())
                }
            }));

    // First two calls fail and trip the breaker.
    for amount in ["$100", "$200"] {
        let err = payments.ready().await?.call(amount).await.unwrap_err();
        println!("call {amount}: {err}");
    }
    // Third call is rejected by the circuit breaker.
    let err = payments.ready().await?.call("$300").await.unwrap_err();
    println!("{err}");
    let rejection = find_rejection(&*err).ok_or("not a switchyard rejection")?;
    println!(
        "  kind={} http={} retry_after={:?} reached the service {} times; state={}",
        rejection.kind(),
        rejection.kind().http_status(),
        rejection.retry_after(),
        reached.load(Ordering::Relaxed),
        handle.state(),
    );

    // After the open wait a probe reaches the service again (and fails, reopening it).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = payments.ready().await?.call("$400").await.unwrap_err();
    println!("after 100 ms, a probe: {err}; state={}", handle.state());
    println!("{}", serde_json::to_string_pretty(&handle.snapshot())?);
    Ok(())
}
