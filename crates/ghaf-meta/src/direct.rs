//! Synchronous SQLite connections for hot paths.
//!
//! sqlx runs every SQLite connection on a worker thread of its own, so each statement is two
//! hand-offs between threads (the request and the reply). A small write such as one metric
//! and its audit entry is six statements, and on a loaded two-core machine the hand-offs cost
//! more than SQLite itself. [`SqliteDirect`] keeps a few plain `rusqlite` connections to the
//! same database file and runs statements on the calling thread.
//!
//! Writes through [`SqliteDirect::try_write`] do not wait for a lock. When every connection
//! is in use or another connection holds the database's write lock, the call returns `None`.
//! The caller then takes its ordinary sqlx path, which waits with the pool's busy timeout.
//! Reads through [`SqliteDirect::read`] block the calling thread for the length of the query,
//! so async callers run long reads on a blocking thread (`tokio::task::spawn_blocking`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::MetaError;

/// Connections kept open between calls. More may be open at once under load; the ones over
/// this count are closed when they are returned.
const MAX_IDLE: usize = 4;

/// Maximum connections open at once for writes. A write that finds all of them busy falls
/// back to sqlx.
const MAX_OPEN: u64 = 8;

/// Pragmas of every connection, direct or pooled. The page cache is a maximum per connection
/// and fills only with pages that were read; memory-mapped reads avoid a copy per page.
pub(crate) const CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
     PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY;";

/// Plain SQLite connections to the metadata database file, for statements that must not pay
/// sqlx's thread hand-offs. Only file databases have one; see [`crate::Db::sqlite_direct`].
#[derive(Debug)]
pub struct SqliteDirect {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    open: AtomicU64,
    committed_writes: AtomicU64,
    skipped_writes: AtomicU64,
}

impl SqliteDirect {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            open: AtomicU64::new(0),
            committed_writes: AtomicU64::new(0),
            skipped_writes: AtomicU64::new(0),
        }
    }

    /// Returns the database file these connections open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `write` in a `BEGIN IMMEDIATE` transaction on the calling thread and commits it
    /// when `write` returns `Ok`; an `Err` rolls it back.
    ///
    /// Returns `None`, having run nothing, when no connection is free or can be opened, or
    /// another connection holds the write lock, and the caller then writes through sqlx.
    /// The connection's busy timeout is zero until the lock is taken, so SQLite reports a
    /// held lock at once instead of waiting. Any other SQLite error comes back as
    /// `Some(Err(..))`.
    pub fn try_write<R, E>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R, E>,
    ) -> Option<Result<R, E>>
    where
        E: From<MetaError>,
    {
        // A connection that cannot be opened (too many open files, say) leaves the write to
        // the sqlx pool, like a busy one.
        let Ok(Some(mut conn)) = self.take() else {
            self.skipped_writes.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // A busy lock must not wait here: the caller is an async task on a runtime thread.
        if let Err(error) = conn.busy_timeout(std::time::Duration::ZERO) {
            return Some(Err(MetaError::from(error).into()));
        }
        let outcome = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Err(error) if is_busy(&error) => None,
            Err(error) => Some(Err(MetaError::from(error).into())),
            Ok(tx) => {
                // The write lock is held now. Without WAL (a file system that cannot map
                // shared memory) COMMIT still waits for readers, so it gets the usual timeout.
                match tx.busy_timeout(BUSY_TIMEOUT) {
                    Err(error) => Some(Err(MetaError::from(error).into())),
                    Ok(()) => match write(&tx) {
                        Ok(value) => match tx.commit() {
                            Ok(()) => Some(Ok(value)),
                            Err(error) => Some(Err(MetaError::from(error).into())),
                        },
                        // Dropping the transaction rolls it back.
                        Err(error) => Some(Err(error)),
                    },
                }
            }
        };
        match &outcome {
            None => {
                self.skipped_writes.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(_)) => {
                self.committed_writes.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(_)) => {}
        }
        outcome
    }

    /// Runs `read` on a connection of this set on the calling thread, waiting for a busy
    /// database up to the 5 s busy timeout. Blocks for as long as the query runs.
    pub fn read<R>(
        &self,
        read: impl FnOnce(&Connection) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let conn = match self.take()? {
            Some(conn) => conn,
            None => {
                // Reads do not fall back to sqlx, so one over the limit opens a connection
                // of its own for the call.
                self.open.fetch_add(1, Ordering::Relaxed);
                let mut lease = Lease {
                    set: self,
                    conn: None,
                };
                lease.conn = Some(open_connection(&self.path)?);
                lease
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        read(&conn)
    }

    /// Counts of writes committed here and of writes left to sqlx because the lock was
    /// busy or no connection was free, since this set was created. A write whose closure
    /// returned an error, which rolled it back, is in neither count.
    pub fn write_counts(&self) -> (u64, u64) {
        (
            self.committed_writes.load(Ordering::Relaxed),
            self.skipped_writes.load(Ordering::Relaxed),
        )
    }

    /// Takes an idle connection or opens a new one; `None` when [`MAX_OPEN`] are open.
    fn take(&self) -> Result<Option<Lease<'_>>, MetaError> {
        if let Some(conn) = self.lock_idle().pop() {
            return Ok(Some(Lease {
                set: self,
                conn: Some(conn),
            }));
        }
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        if open >= MAX_OPEN {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Ok(None);
        }
        // From here the lease gives the count back, whether the open fails or the caller
        // panics.
        let mut lease = Lease {
            set: self,
            conn: None,
        };
        lease.conn = Some(open_connection(&self.path)?);
        Ok(Some(lease))
    }

    /// Returns a connection to the idle list, or closes it; `None` is one that failed to
    /// open, whose place in the count is given back.
    fn give_back(&self, conn: Option<Connection>) {
        let Some(conn) = conn else {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        // A connection left inside a transaction by a panic or a failed rollback is closed
        // rather than reused.
        let mut idle = self.lock_idle();
        if conn.is_autocommit() && idle.len() < MAX_IDLE {
            idle.push(conn);
        } else {
            drop(idle);
            self.open.fetch_sub(1, Ordering::Relaxed);
            drop(conn);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The list holds no invariant a panic could break, so a poisoned lock is still usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Busy timeout of reads, and of a write once it holds the write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection taken from a [`SqliteDirect`]; dropping it returns the connection, also when
/// the code using it panics.
struct Lease<'a> {
    set: &'a SqliteDirect,
    conn: Option<Connection>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a lease in use holds a connection")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a lease in use holds a connection")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.set.give_back(self.conn.take());
    }
}

fn open_connection(path: &Path) -> Result<Connection, MetaError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(CONNECTION_PRAGMAS)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, SqliteDirect) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("direct.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        )
        .unwrap();
        (dir, SqliteDirect::new(&path))
    }

    #[test]
    fn write_commits_and_read_sees_it() {
        let (_dir, direct) = scratch();
        let written = direct.try_write(|tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", ["a"])
                .map_err(MetaError::from)
        });
        assert_eq!(written.unwrap().unwrap(), 1);
        let count: i64 = direct
            .read(|conn| Ok(conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(direct.write_counts(), (1, 0));
    }

    #[test]
    fn failed_write_rolls_back() {
        let (_dir, direct) = scratch();
        let written: Option<Result<(), MetaError>> = direct.try_write(|tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", ["a"])?;
            Err(MetaError::Conflict {
                what: "test",
                name: "rollback".into(),
            })
        });
        assert!(matches!(written, Some(Err(MetaError::Conflict { .. }))));
        assert_eq!(direct.write_counts(), (0, 0));
        let count: i64 = direct
            .read(|conn| Ok(conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn locked_database_skips_without_waiting() {
        let (_dir, direct) = scratch();
        let mut other = Connection::open(direct.path()).unwrap();
        let holder = other
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let written = direct.try_write(|tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", ["a"])
                .map_err(MetaError::from)
        });
        assert!(written.is_none(), "a locked database must be left to sqlx");
        assert_eq!(direct.write_counts(), (0, 1));
        holder.rollback().unwrap();

        let written = direct.try_write(|tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", ["b"])
                .map_err(MetaError::from)
        });
        assert_eq!(written.unwrap().unwrap(), 1);
    }

    #[test]
    fn connection_inside_transaction_is_not_reused() {
        let (_dir, direct) = scratch();
        let lease = direct.take().unwrap().unwrap();
        lease.execute_batch("BEGIN").unwrap();
        drop(lease);
        assert!(direct.lock_idle().is_empty());
        assert_eq!(direct.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn panicking_reader_returns_connection() {
        let (_dir, direct) = scratch();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), MetaError> = direct.read(|_| panic!("reader failed"));
        }));
        assert!(caught.is_err());
        assert_eq!(direct.lock_idle().len(), 1);
        assert_eq!(direct.open.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unopenable_file_leaves_write_to_sqlx() {
        let dir = tempfile::tempdir().unwrap();
        let direct = SqliteDirect::new(&dir.path().join("missing").join("direct.db"));
        let written = direct.try_write(|_| Ok::<_, MetaError>(()));
        assert!(written.is_none());
        assert_eq!(direct.open.load(Ordering::Relaxed), 0);
        assert!(direct.read(|_| Ok(())).is_err());
        assert_eq!(direct.open.load(Ordering::Relaxed), 0);
    }
}
