//! Connection pool and SQL dialect handling.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, AssertSqlSafe, Executor};

use crate::MetaError;
use crate::direct::{CONNECTION_PRAGMAS, SqliteDirect};

/// The SQL dialect behind a [`Db`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection pool to the metadata database and its dialect.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    direct: Option<Arc<SqliteDirect>>,
}

static INSTALL_DRIVERS: Once = Once::new();

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) and applies pending migrations.
    ///
    /// SQLite databases are created when missing and opened in WAL mode with a 5 s busy
    /// timeout, foreign keys on, a page cache of up to 16 MiB per connection and reads
    /// through a memory map of up to 256 MiB. Pooled SQLite connections are not pinged when
    /// taken from the pool: they are local files, and a ping is one more hand-off to the
    /// connection's thread.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, MetaError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(MetaError::UnsupportedUrl {
                url: redact_url(url),
            });
        };

        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10));
        let mut direct = None;
        if dialect == Dialect::Sqlite {
            pool_options = pool_options
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL;").await?;
                        conn.execute(CONNECTION_PRAGMAS).await?;
                        Ok(())
                    })
                });
            direct = sqlite_file(&url)?.map(|path| Arc::new(SqliteDirect::new(&path)));
        }
        let pool = pool_options.connect_with(options).await?;
        let db = Self {
            pool,
            dialect,
            direct,
        };
        crate::migrate::apply(&db).await?;
        Ok(db)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Plain SQLite connections to this database's file, for hot paths that must not pay
    /// sqlx's thread hand-offs. `None` on PostgreSQL and on in-memory SQLite databases.
    pub fn sqlite_direct(&self) -> Option<&SqliteDirect> {
        self.direct.as_deref()
    }

    /// Prepares a statement written with `?` placeholders for this dialect: PostgreSQL gets
    /// `$1, $2, …`, SQLite takes `?` as written.
    ///
    /// Callers pass statements assembled from fixed fragments only, never from input; all
    /// values are bound parameters. Statements never contain a literal `?` inside a string,
    /// so a plain scan is enough.
    pub fn sql(&self, statement: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(self.placeholders(statement).into_owned())
    }

    fn placeholders<'a>(&self, statement: &'a str) -> Cow<'a, str> {
        match self.dialect {
            Dialect::Sqlite => Cow::Borrowed(statement),
            Dialect::Postgres => {
                let mut out = String::with_capacity(statement.len() + 8);
                let mut index = 0;
                for ch in statement.chars() {
                    if ch == '?' {
                        index += 1;
                        out.push('$');
                        out.push_str(&index.to_string());
                    } else {
                        out.push(ch);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Returns the file of a SQLite URL, or `None` for an in-memory or read-only database.
fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, MetaError> {
    let options = SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    // sqlx names an in-memory database `file:sqlx-in-memory-N`.
    let in_memory = url.contains(":memory:")
        || url.contains("mode=memory")
        || path.as_os_str().is_empty()
        || path.to_string_lossy().starts_with("file:");
    // Direct connections open the file read-write, so a read-only URL gets none.
    let read_only = url.contains("mode=ro");
    Ok((!in_memory && !read_only).then(|| path.to_owned()))
}

/// Query parameters of connection URLs whose values are secrets.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword", "sslkey", "secret", "token"];

/// Removes secrets from a connection URL before it appears in a message or log: the password
/// of the user-info part (which may itself contain `@`) and the values of query parameters
/// such as `password=` and `sslpassword=`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The host starts after the last `@` of the authority, so a password containing `@` is
    // removed whole.
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{credentials}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_password() {
        assert_eq!(
            redact_url("postgres://ghaf:secret@db:5432/ghaf"),
            "postgres://ghaf:***@db:5432/ghaf"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn redact_url_handles_at_in_password() {
        assert_eq!(
            redact_url("postgres://u:hun@ter2@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn redact_url_hides_query_secrets() {
        let redacted = redact_url(
            "postgres://h:5432/db?user=u&password=hunter2&sslpassword=x&sslmode=require",
        );
        assert_eq!(
            redacted,
            "postgres://h:5432/db?user=u&password=***&sslpassword=***&sslmode=require"
        );
    }
}
