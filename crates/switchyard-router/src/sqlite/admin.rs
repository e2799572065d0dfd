//! The routes table's writer: validated upserts, strategy flips and deletes.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use switchyard_core::sync::lock;
use tokio::sync::Notify;

use super::{SELECT, init, open, read_all, read_row};
use crate::config::RouteConfig;
use crate::error::SourceError;
use crate::source::{RouteRow, valid_service_name};

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

fn valid_strategy(strategy: &str) -> bool {
    (1..=64).contains(&strategy.len())
        && strategy
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Reads and writes the routes table (the admin API), validating what it writes.
///
/// Every write is one statement, committed at once; a router watching the file picks it up within
/// its poll interval, or at once when the admin came from the router's own
/// [`SqliteSource::admin`](crate::SqliteSource::admin). Methods run on tokio's blocking pool;
/// [`Admin::blocking`] gives the same operations for synchronous callers (a CLI).
#[derive(Clone)]
pub struct Admin {
    conn: Arc<Mutex<Connection>>,
    pub(super) written: Option<Arc<Notify>>,
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
        RouteConfig::from_json(config).map_err(AdminError::InvalidConfig)?;
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
