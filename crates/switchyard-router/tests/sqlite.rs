//! The SQLite source and admin: schema, validation, change detection from every writer.

use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use switchyard_core::{RejectionKind, find_rejection};
use switchyard_router::{Admin, AdminError, RouteRow, RouteSource, Router, SqliteSource};
use tower::{BoxError, ServiceExt, service_fn};

fn billing() -> Router {
    let router = Router::new();
    router.register_local(
        "billing",
        service_fn(|body: Bytes| async move {
            Ok::<_, BoxError>(Bytes::from(format!(
                "billed:{}",
                String::from_utf8_lossy(&body)
            )))
        }),
    );
    router
}

async fn call(router: &Router, name: &str, body: &'static str) -> Result<Bytes, BoxError> {
    router
        .clone()
        .oneshot((name, Bytes::from_static(body.as_bytes())))
        .await
}

/// A second connection, as another process or the `sqlite3` shell would hold.
fn external(path: &std::path::Path) -> Connection {
    switchyard_router::sqlite::open(path).unwrap()
}

#[test]
fn init_is_idempotent_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.db");
    let mut conn = switchyard_router::sqlite::open(&path).unwrap();
    switchyard_router::sqlite::init(&mut conn).unwrap();
    switchyard_router::sqlite::init(&mut conn).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);

    // The trigger stamps updates.
    conn.execute(
        "INSERT INTO routes (service_name, strategy, updated_at) VALUES ('a', 'local', 0)",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE routes SET strategy = 'noop' WHERE service_name = 'a'",
        [],
    )
    .unwrap();
    let stamped: i64 = conn
        .query_row(
            "SELECT updated_at FROM routes WHERE service_name = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stamped > 1_700_000_000, "{stamped}");

    // A database from a newer build is refused, not clobbered.
    conn.pragma_update(None, "user_version", 99).unwrap();
    let err = switchyard_router::sqlite::init(&mut conn).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[tokio::test]
async fn admin_validates_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path().join("routes.db")).unwrap();
    admin
        .upsert(RouteRow::new("billing", "local"))
        .await
        .unwrap();

    let bad = [
        (RouteRow::new("", "local"), "invalid service name"),
        (RouteRow::new("a/b", "local"), "invalid service name"),
        (
            RouteRow::new("x".repeat(129), "local"),
            "invalid service name",
        ),
        (RouteRow::new("ok", ""), "invalid strategy"),
        (RouteRow::new("ok", "HTTP"), "invalid strategy"),
        (
            RouteRow::new("ok", "local").with_config("{"),
            "malformed JSON",
        ),
        (
            RouteRow::new("ok", "local").with_config(r#"{"retry": {"max_attempts": 0}}"#),
            "retry.max_attempts",
        ),
    ];
    for (row, says) in bad {
        let err = admin.upsert(row.clone()).await.unwrap_err();
        assert!(err.to_string().contains(says), "{row:?}: {err}");
    }
    assert!(matches!(
        admin.set_strategy("nobody", "noop").await,
        Err(AdminError::NotFound(_))
    ));
    assert!(matches!(
        admin.set_strategy("billing", "No Op").await,
        Err(AdminError::InvalidStrategy(_))
    ));
    assert!(matches!(
        admin.delete("nobody").await,
        Err(AdminError::NotFound(_))
    ));
    assert!(matches!(
        admin.get("nobody").await,
        Err(AdminError::NotFound(_))
    ));

    // Nothing bad was written.
    let rows = admin.list().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].strategy, "local");

    // Upsert replaces; the blocking form sees the same table.
    admin
        .upsert(RouteRow::new("billing", "http").with_endpoint("http://example.com/bill"))
        .await
        .unwrap();
    let row = admin.blocking().get("billing").unwrap();
    assert_eq!(
        (row.strategy.as_str(), row.endpoint.as_deref()),
        ("http", Some("http://example.com/bill"))
    );
    admin.blocking().delete("billing").unwrap();
    assert!(admin.blocking().list().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_write_from_another_connection_is_seen_within_the_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.db");
    let source = SqliteSource::open(&path)
        .unwrap()
        .poll_interval(Duration::from_millis(200));
    let router = billing();
    router.reload_from(&source).await.unwrap();
    let _watch = router.watch(source);
    let mut reloads = router.reloads();
    reloads.borrow_and_update();

    let shell = external(&path);
    shell
        .execute(
            "INSERT INTO routes (service_name, strategy) VALUES ('billing', 'noop')",
            [],
        )
        .unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_millis(250), reloads.changed())
        .await
        .expect("reloaded within the poll interval")
        .unwrap();
    assert!(
        started.elapsed() <= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "");

    // And back, through the shell again.
    shell
        .execute(
            "UPDATE routes SET strategy = 'local' WHERE service_name = 'billing'",
            [],
        )
        .unwrap();
    tokio::time::timeout(Duration::from_millis(250), reloads.changed())
        .await
        .expect("reloaded within the poll interval")
        .unwrap();
    assert_eq!(call(&router, "billing", "$2").await.unwrap(), "billed:$2");
}

#[tokio::test(start_paused = true)]
async fn the_routers_own_admin_writes_are_seen_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.db");
    // An hour between polls: only the admin's wake-up can explain a prompt reload.
    let source = SqliteSource::open(&path)
        .unwrap()
        .poll_interval(Duration::from_secs(3600));
    let admin = source.admin().unwrap();
    let router = billing();
    router.reload_from(&source).await.unwrap();
    let _watch = router.watch(source);
    let mut reloads = router.reloads();
    reloads.borrow_and_update();

    admin
        .upsert(RouteRow::new("billing", "noop"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_millis(10), reloads.changed())
        .await
        .expect("reloaded without waiting for a poll")
        .unwrap();
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "");
}

#[tokio::test]
async fn badly_typed_shell_rows_break_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.db");
    let source = SqliteSource::open(&path).unwrap();
    let shell = external(&path);
    // SQLite columns are dynamically typed: the shell can store numbers and blobs anywhere.
    shell
        .execute_batch(
            "INSERT INTO routes (service_name, strategy) VALUES ('billing', 'local');
             INSERT INTO routes (service_name, strategy) VALUES ('numeric', 7);
             INSERT INTO routes (service_name, strategy, config) VALUES ('blob', 'local', x'00ff');
             INSERT INTO routes (service_name, strategy, endpoint) VALUES ('nullish', 'http', NULL);",
        )
        .unwrap();
    let router = billing();
    let report = router.reload_from(&source).await.unwrap();
    assert_eq!(report.broken, 3);
    for name in ["numeric", "blob", "nullish"] {
        let err = call(&router, name, "").await.unwrap_err();
        assert_eq!(
            find_rejection(&*err).unwrap().kind(),
            RejectionKind::RouteUnavailable,
            "{name}: {err}"
        );
    }
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "billed:$1");
}

#[tokio::test]
async fn an_unreadable_table_keeps_the_last_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.db");
    let source = SqliteSource::open(&path).unwrap();
    let shell = external(&path);
    shell
        .execute(
            "INSERT INTO routes (service_name, strategy) VALUES ('billing', 'noop')",
            [],
        )
        .unwrap();
    let router = billing();
    router.reload_from(&source).await.unwrap();

    shell.execute("DROP TABLE routes", []).unwrap();
    let err = router.reload_from(&source).await.unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
    assert!(
        router
            .status()
            .last_error
            .unwrap()
            .contains("no such table")
    );
    // Still the last good table: billing is switched off, not lost.
    assert_eq!(call(&router, "billing", "$1").await.unwrap(), "");
    assert!(source.load().await.is_err());
}
