//! The SQLite routes table: schema, connection settings, the polling [`SqliteSource`] and the
//! [`Admin`] writer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use crate::config::RouteConfig;
use crate::error::SourceError;
use crate::source::{RouteRow, RouteSource};

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

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A poisoned lock means a panic while a statement ran; the connection itself is fine.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
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

struct SourceInner {
    path: PathBuf,
    /// Reads the rows.
    reader: Mutex<Connection>,
    /// Polls `data_version`. Its own connection: `data_version` only moves for commits made
    /// through *other* connections, so it must never write.
    watcher: Mutex<Connection>,
    last_version: AtomicI64,
    interval: Duration,
    /// Woken by this process's own [`Admin`] writes, so they never wait for a poll.
    written: Arc<Notify>,
    /// Whether opening created the schema.
    created: bool,
}

/// Routes read from a SQLite file, with changes noticed by polling `PRAGMA data_version`.
///
/// `data_version` moves whenever another connection — in this process or any other, like the
/// `sqlite3` shell — commits to the database, so polling it costs one tiny query per interval
/// and catches every writer. Writes through this source's own [`admin`](Self::admin) also wake
/// the watcher at once. All SQLite work runs on tokio's blocking pool.
#[derive(Clone)]
pub struct SqliteSource {
    inner: Arc<SourceInner>,
}

impl SqliteSource {
    /// Opens (creating if missing) the database at `path`, applies the schema, and reads the
    /// current `data_version`.
    ///
    /// Blocking: call it before the runtime starts or from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let path = path.as_ref().to_path_buf();
        let mut reader = open(&path)?;
        let created = init(&mut reader)?;
        let watcher = open(&path)?;
        let version = data_version(&watcher)?;
        Ok(Self {
            inner: Arc::new(SourceInner {
                path,
                reader: Mutex::new(reader),
                watcher: Mutex::new(watcher),
                last_version: AtomicI64::new(version),
                interval: DEFAULT_POLL_INTERVAL,
                written: Arc::new(Notify::new()),
                created,
            }),
        })
    }

    /// Whether opening this source created the routes schema: the database was new (or empty),
    /// so a caller may seed it.
    pub fn created(&self) -> bool {
        self.inner.created
    }

    /// The same source polling every `interval` (at least 1 ms).
    ///
    /// # Panics
    ///
    /// If the source has already been cloned or handed to a watcher.
    #[must_use]
    pub fn poll_interval(self, interval: Duration) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("set the poll interval before cloning the source"));
        Self {
            inner: Arc::new(SourceInner {
                interval: interval.max(Duration::from_millis(1)),
                ..inner
            }),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// An [`Admin`] over the same file, with its own connection, whose writes wake this
    /// source's watcher at once.
    ///
    /// Blocking (it opens a connection): call it outside the runtime or in `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened.
    pub fn admin(&self) -> Result<Admin, SourceError> {
        let mut admin = Admin::open(&self.inner.path)?;
        admin.written = Some(Arc::clone(&self.inner.written));
        Ok(admin)
    }
}

fn data_version(conn: &Connection) -> Result<i64, SourceError> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
        .map_err(|e| SourceError::new("read data_version", e))
}

impl fmt::Debug for SqliteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSource")
            .field("path", &self.inner.path)
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl RouteSource for SqliteSource {
    async fn load(&self) -> Result<Vec<RouteRow>, SourceError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || read_all(&lock(&inner.reader))).await
    }

    async fn changed(&self) -> Result<(), SourceError> {
        loop {
            let woken = tokio::select! {
                () = self.inner.written.notified() => true,
                () = tokio::time::sleep(self.inner.interval) => false,
            };
            let inner = Arc::clone(&self.inner);
            let version = blocking(move || data_version(&lock(&inner.watcher))).await?;
            // Recorded on both paths, so an admin's write is not reloaded a second time when
            // the next poll sees its version.
            let moved = self.inner.last_version.swap(version, Ordering::AcqRel) != version;
            if woken || moved {
                return Ok(());
            }
        }
    }
}

/// Why an [`Admin`] call failed. Nothing was written.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminError {
    /// The service name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    InvalidName(String),
    /// The strategy is empty, too long, or has characters outside `[a-z0-9_-]`.
    InvalidStrategy(String),
    /// The config document does not parse or validate (the error names the field).
    InvalidConfig(switchyard_core::ConfigError),
    /// No route has this name.
    NotFound(String),
    /// The database failed.
    Database(SourceError),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(name) => write!(
                f,
                "invalid service name {name:?}: use 1 to 128 characters from [A-Za-z0-9._-]"
            ),
            Self::InvalidStrategy(s) => write!(
                f,
                "invalid strategy {s:?}: use 1 to 64 characters from [a-z0-9_-]"
            ),
            Self::InvalidConfig(e) => write!(f, "invalid config: {e}"),
            Self::NotFound(name) => write!(f, "no route named {name:?}"),
            Self::Database(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidConfig(e) => Some(e),
            Self::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SourceError> for AdminError {
    fn from(e: SourceError) -> Self {
        Self::Database(e)
    }
}

/// Checks a service name: 1 to 128 characters from `[A-Za-z0-9._-]`, so it is a safe URL path
/// segment and metric label.
pub fn valid_service_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_strategy(strategy: &str) -> bool {
    (1..=64).contains(&strategy.len())
        && strategy
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Reads and writes the routes table (the seed's admin API), validating what it writes.
///
/// Every write is one statement, committed at once; a router watching the file picks it up
/// within its poll interval, or at once when the admin came from the router's own
/// [`SqliteSource::admin`]. Methods run on tokio's blocking pool; [`Admin::blocking`] gives
/// the same operations for synchronous callers (a CLI).
#[derive(Clone)]
pub struct Admin {
    conn: Arc<Mutex<Connection>>,
    written: Option<Arc<Notify>>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Opens the database at `path` (creating it and its schema if missing).
    ///
    /// # Errors
    ///
    /// The file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let mut conn = open(path)?;
        let _created = init(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            written: None,
        })
    }

    /// The synchronous form of this admin.
    pub fn blocking(&self) -> BlockingAdmin<'_> {
        BlockingAdmin { admin: self }
    }

    async fn run<T, F>(&self, work: F) -> Result<T, AdminError>
    where
        F: FnOnce(&Connection) -> Result<T, AdminError> + Send + 'static,
        T: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || work(&lock(&conn)))
            .await
            .map_err(|e| AdminError::Database(SourceError::new("database task failed", e)))?
    }

    fn wrote(&self) {
        if let Some(written) = &self.written {
            written.notify_one();
        }
    }

    /// Every route, by name.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn list(&self) -> Result<Vec<RouteRow>, AdminError> {
        self.run(|conn| Ok(read_all(conn)?)).await
    }

    /// One route.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`], or the database failed.
    pub async fn get(&self, service: &str) -> Result<RouteRow, AdminError> {
        let service = service.to_owned();
        self.run(move |conn| get(conn, &service)).await
    }

    /// Inserts or replaces a route's strategy, endpoint and config, after checking the name,
    /// the strategy and that the config parses (whether the strategy has a transport is the
    /// router's business: a route may be written before the process that serves it starts).
    ///
    /// # Errors
    ///
    /// A validation error naming what is wrong, or the database failed.
    pub async fn upsert(&self, row: RouteRow) -> Result<(), AdminError> {
        self.run(move |conn| upsert(conn, &row)).await?;
        self.wrote();
        Ok(())
    }

    /// Changes only a route's strategy (`noop` to switch it off, `local` to serve in-process).
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`], an invalid strategy, or the database failed.
    pub async fn set_strategy(&self, service: &str, strategy: &str) -> Result<(), AdminError> {
        let (service, strategy) = (service.to_owned(), strategy.to_owned());
        self.run(move |conn| set_strategy(conn, &service, &strategy))
            .await?;
        self.wrote();
        Ok(())
    }

    /// Deletes a route. A router closes its service once in-flight calls finish.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`], or the database failed.
    pub async fn delete(&self, service: &str) -> Result<(), AdminError> {
        let service = service.to_owned();
        self.run(move |conn| delete(conn, &service)).await?;
        self.wrote();
        Ok(())
    }
}

/// The synchronous form of [`Admin`], for callers outside a runtime. It blocks the thread.
#[derive(Debug)]
pub struct BlockingAdmin<'a> {
    admin: &'a Admin,
}

impl BlockingAdmin<'_> {
    /// See [`Admin::list`].
    ///
    /// # Errors
    ///
    /// The database failed.
    pub fn list(&self) -> Result<Vec<RouteRow>, AdminError> {
        Ok(read_all(&lock(&self.admin.conn))?)
    }

    /// See [`Admin::get`].
    ///
    /// # Errors
    ///
    /// See [`Admin::get`].
    pub fn get(&self, service: &str) -> Result<RouteRow, AdminError> {
        get(&lock(&self.admin.conn), service)
    }

    /// See [`Admin::upsert`].
    ///
    /// # Errors
    ///
    /// See [`Admin::upsert`].
    pub fn upsert(&self, row: &RouteRow) -> Result<(), AdminError> {
        upsert(&lock(&self.admin.conn), row)?;
        self.admin.wrote();
        Ok(())
    }

    /// See [`Admin::set_strategy`].
    ///
    /// # Errors
    ///
    /// See [`Admin::set_strategy`].
    pub fn set_strategy(&self, service: &str, strategy: &str) -> Result<(), AdminError> {
        set_strategy(&lock(&self.admin.conn), service, strategy)?;
        self.admin.wrote();
        Ok(())
    }

    /// See [`Admin::delete`].
    ///
    /// # Errors
    ///
    /// See [`Admin::delete`].
    pub fn delete(&self, service: &str) -> Result<(), AdminError> {
        delete(&lock(&self.admin.conn), service)?;
        self.admin.wrote();
        Ok(())
    }
}

fn db(what: &str) -> impl FnOnce(rusqlite::Error) -> AdminError + '_ {
    move |e| AdminError::Database(SourceError::new(what.to_owned(), e))
}

fn get(conn: &Connection, service: &str) -> Result<RouteRow, AdminError> {
    conn.prepare_cached(&format!("{SELECT} WHERE service_name = ?1"))
        .and_then(|mut stmt| stmt.query_row([service], read_row).optional())
        .map_err(db("read route"))?
        .ok_or_else(|| AdminError::NotFound(service.to_owned()))
}

fn upsert(conn: &Connection, row: &RouteRow) -> Result<(), AdminError> {
    if !valid_service_name(&row.service_name) {
        return Err(AdminError::InvalidName(row.service_name.clone()));
    }
    if !valid_strategy(&row.strategy) {
        return Err(AdminError::InvalidStrategy(row.strategy.clone()));
    }
    if let Some(config) = &row.config {
        RouteConfig::parse(config).map_err(AdminError::InvalidConfig)?;
    }
    conn.execute(
        "INSERT INTO routes (service_name, strategy, endpoint, config) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (service_name) DO UPDATE SET
             strategy = excluded.strategy, endpoint = excluded.endpoint, config = excluded.config",
        params![row.service_name, row.strategy, row.endpoint, row.config],
    )
    .map_err(db("write route"))?;
    Ok(())
}

fn set_strategy(conn: &Connection, service: &str, strategy: &str) -> Result<(), AdminError> {
    if !valid_strategy(strategy) {
        return Err(AdminError::InvalidStrategy(strategy.to_owned()));
    }
    let changed = conn
        .execute(
            "UPDATE routes SET strategy = ?2 WHERE service_name = ?1",
            params![service, strategy],
        )
        .map_err(db("write route"))?;
    if changed == 0 {
        return Err(AdminError::NotFound(service.to_owned()));
    }
    Ok(())
}

fn delete(conn: &Connection, service: &str) -> Result<(), AdminError> {
    let changed = conn
        .execute("DELETE FROM routes WHERE service_name = ?1", [service])
        .map_err(db("delete route"))?;
    if changed == 0 {
        return Err(AdminError::NotFound(service.to_owned()));
    }
    Ok(())
}
