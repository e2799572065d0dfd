//! The router example: `billing` runs in-process, then one SQL row switches it off, with
//! no restart — and a watcher picks up a write made through another connection, as the
//! `sqlite3` shell would make it.
//!
//! `cargo run --example router --features router`
//!
//! Prints:
//!
//! ```text
//! billed:$100
//! true
//! billed:$300
//! ```

use std::time::Duration;

use bytes::Bytes;
use switchyard::router::{RouteRow, Router, SqliteSource};
use tower::{BoxError, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("switchyard-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("routes.db");

    // 1. The routes table (created with its schema if missing) and an admin over it.
    let source = SqliteSource::open(&path)?.poll_interval(Duration::from_millis(50));
    let admin = source.admin()?;

    // 2. A router with a local billing service (a handler, as a tower service).
    let router = Router::new();
    router.register_local(
        "billing",
        service_fn(|payload: Bytes| async move {
            Ok::<_, BoxError>(Bytes::from(format!(
                "billed:{}",
                String::from_utf8_lossy(&payload)
            )))
        }),
    );

    // 3. billing runs locally.
    admin.upsert(RouteRow::new("billing", "local")).await?;
    router.reload_from(&source).await?;
    let resp = router.dispatch("billing", Bytes::from("$100")).await?;
    println!("{}", String::from_utf8_lossy(&resp));

    // 4. Switch to noop: disabled with zero downtime.
    admin.set_strategy("billing", "noop").await?;
    router.reload_from(&source).await?;
    let resp = router.dispatch("billing", Bytes::from("$200")).await?;
    println!("{}", resp.is_empty());

    // 5. In a server the watcher follows every writer; here, another connection.
    let _watch = router.watch(source);
    let mut reloads = router.reloads();
    reloads.borrow_and_update();
    let shell = switchyard::router::sqlite::open(&path)?;
    shell.execute(
        "UPDATE routes SET strategy = 'local' WHERE service_name = 'billing'",
        [],
    )?;
    tokio::time::timeout(Duration::from_secs(5), reloads.changed()).await??;
    let resp = router.dispatch("billing", Bytes::from("$300")).await?;
    println!("{}", String::from_utf8_lossy(&resp));

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
