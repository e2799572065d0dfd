//! The polling route source over a SQLite file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use switchyard_core::sync::lock;
use tokio::sync::Notify;

use super::{Admin, DEFAULT_POLL_INTERVAL, blocking, init, open, read_all};
use crate::error::SourceError;
use crate::source::{RouteRow, RouteSource};

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

    fn poll_every(&self) -> Option<Duration> {
        Some(self.inner.interval)
    }
}
