//! The SQLite routes table: the schema and its migrations, connection settings, and the two
//! ways in — [`SqliteSource`], which polls the file for changes, and [`Admin`], which writes
//! rows. [`open`] and [`init`] are for tools that want the connection itself (a migration
//! step, a test writing rows as another process would).

mod admin;
mod source;

pub use admin::{Admin, AdminError, BlockingAdmin};
pub use source::SqliteSource;

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::Value;

use crate::error::SourceError;
use crate::source::RouteRow;

/// How often a [`SqliteSource`] polls `PRAGMA data_version` unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a connection waits for another writer's lock before giving up (`busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the routes table and the trigger keeping `updated_at` (with `strftime`, not
    // `unixepoch()`, so `sqlite3` shells older than 3.38 can still write through the trigger).
    "CREATE TABLE IF NOT EXISTS routes (
        service_name TEXT PRIMARY KEY,
        strategy     TEXT NOT NULL,
        endpoint     TEXT,
        config       TEXT,
        updated_at   INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
    );
    CREATE TRIGGER IF NOT EXISTS routes_touch AFTER UPDATE ON routes
    FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
    BEGIN
        UPDATE routes SET updated_at = CAST(strftime('%s', 'now') AS INTEGER)
        WHERE service_name = NEW.service_name;
    END;",
];

/// Opens (creating if missing) a routes database with the settings every connection to it
/// uses: WAL journal (readers never block the writer), a 5 s `busy_timeout`, foreign keys on.
///
/// # Errors
///
/// The file cannot be opened or the settings cannot be applied.
pub fn open(path: impl AsRef<Path>) -> Result<Connection, SourceError> {
    let path = path.as_ref();
    let conn = Connection::open(path)
        .map_err(|e| SourceError::new(format!("open {}", path.display()), e))?;
    configure(&conn).map_err(|e| SourceError::new(format!("configure {}", path.display()), e))?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // `journal_mode` answers with the mode in force (`memory` for in-memory databases).
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Creates or upgrades the routes schema. Idempotent: running it on an up-to-date database
/// changes nothing. Answers whether the schema was created from nothing (a new database, which
/// a caller may want to seed with rows).
///
/// # Errors
///
/// The database is unwritable, or was created by a newer version with more migrations.
pub fn init(conn: &mut Connection) -> Result<bool, SourceError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| SourceError::new("begin schema migration", e))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| SourceError::new("read schema version", e))?;
    let known = MIGRATIONS.len() as i64;
    if version < 0 {
        return Err(SourceError::msg(format!(
            "the routes database has an invalid schema version {version}"
        )));
    }
    if version > known {
        return Err(SourceError::msg(format!(
            "the routes database has schema version {version}, newer than this build knows ({known})"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration)
            .map_err(|e| SourceError::new(format!("schema migration {}", i + 1), e))?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(|e| SourceError::new("record schema version", e))?;
    tx.commit()
        .map_err(|e| SourceError::new("commit schema migration", e))?;
    Ok(version == 0)
}

/// Runs blocking SQLite work on tokio's blocking pool, never on a runtime worker.
async fn blocking<T, F>(work: F) -> Result<T, SourceError>
where
    F: FnOnce() -> Result<T, SourceError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SourceError::new("database task failed", e))?
}

/// A column as text, whatever type the row stored (SQLite columns are dynamically typed: a
/// shell write may store a number where text is expected).
fn text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(r) => Some(r.to_string()),
        Value::Text(s) => Some(s),
        Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
    }
}

const SELECT: &str = "SELECT service_name, strategy, endpoint, config, updated_at FROM routes";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RouteRow> {
    Ok(RouteRow {
        service_name: text(row.get(0)?).unwrap_or_default(),
        strategy: text(row.get(1)?).unwrap_or_default(),
        endpoint: text(row.get(2)?),
        config: text(row.get(3)?),
        updated_at: match row.get::<_, Value>(4)? {
            Value::Integer(i) => i,
            _ => 0,
        },
    })
}

fn read_all(conn: &Connection) -> Result<Vec<RouteRow>, SourceError> {
    let mut stmt = conn
        .prepare_cached(&format!("{SELECT} ORDER BY service_name"))
        .map_err(|e| SourceError::new("read routes", e))?;
    let rows = stmt
        .query_map([], read_row)
        .map_err(|e| SourceError::new("read routes", e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| SourceError::new("read routes", e))
}
