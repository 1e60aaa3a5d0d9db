//! Storage adapters. [`open`] picks the database from the URL scheme (`postgres://` or
//! `sqlite://`), runs the migrations and returns the domain's [`Store`](crate::domain::store::Store).
//!
//! One implementation ([`sql::SqlStore`]) serves both databases through sqlx's `Any` driver, over
//! our own small pool ([`connections`]); the SQL is the same but for the commands' reads and
//! conditional writes, which on Postgres are grouped with those of concurrent commands into shared
//! statements ([`batch_read`], [`batch`]; native driver for array parameters) and on SQLite into
//! shared transactions (in [`sql`]). [`Dialect`] decides the differences in one place. Recently
//! seen users' state is kept in process ([`cache`]) to spare a command its read.

pub mod batch;
pub mod batch_read;
pub mod cache;
pub mod connections;
pub mod sql;

use std::time::Duration;

use sqlx::migrate::Migrator;

use crate::domain::Error;

pub use sql::SqlStore;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The database behind a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The dialect of `url`, or `None` for an unsupported scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else {
            None
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
        }
    }
}

/// Postgres: the queues that group concurrent reads, and concurrent commands (read, decide,
/// write), into shared statements.
#[derive(Clone, Debug)]
pub struct Grouped {
    pub reads: batch_read::GroupRead,
    pub writes: batch::GroupCommit,
}

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Postgres: longest a group-commit statement may run (e.g. waiting on a row lock held by a
    /// foreign session) before it fails, so that one stuck write cannot hold up the others.
    pub write_timeout: Duration,
    /// How many users' last known state to keep in process (0: none); see [`cache`].
    pub cache_capacity: usize,
    /// Most operations waiting for the database at once (each queue of the Postgres readers and
    /// writer; all operations on SQLite); beyond it an operation is refused with code 8.
    pub queue_capacity: usize,
}

/// Connects, migrates, and returns the store.
pub async fn open(options: &StoreOptions) -> anyhow::Result<SqlStore> {
    let store = connect(options).await?;
    store.migrate().await?;
    Ok(store)
}

/// Connects without migrating.
pub async fn connect(options: &StoreOptions) -> anyhow::Result<SqlStore> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::of_url(&options.url).ok_or_else(|| {
        anyhow::anyhow!("DATABASE_URL must start with postgres:// or sqlite: (got another scheme)")
    })?;
    let connections = connections::Connections::open(
        &options.url,
        dialect,
        options.max_connections,
        options.acquire_timeout,
    )
    .await?;
    let grouped = if dialect == Dialect::Postgres {
        Some(Grouped {
            reads: batch_read::GroupRead::start(
                &options.url,
                options.write_timeout,
                options.queue_capacity,
            ),
            writes: batch::GroupCommit::start(
                &options.url,
                options.write_timeout,
                options.queue_capacity,
            )
            .map_err(|e| anyhow::anyhow!("starting the database writer: {e}"))?,
        })
    } else {
        None
    };
    Ok(SqlStore::new(
        connections,
        dialect,
        grouped,
        cache::SnapshotCache::new(options.cache_capacity),
        options.queue_capacity,
    ))
}

impl SqlStore {
    /// Applies the pending migrations of this store's dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = self.dialect().migrator();
        self.with_connection(async |conn| {
            migrator
                .run(conn)
                .await
                .map_err(|e| Error::Internal(format!("applying the migrations: {e}")))
        })
        .await?;
        Ok(())
    }
}

/// Sorts a database failure into "unreachable, try again" (code 14) or "unexpected" (code 13).
pub(crate) fn classify(context: &str, err: sqlx::Error) -> Error {
    let try_again = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|c| is_transient(&c)),
        _ => false,
    };
    if try_again {
        Error::Unavailable(format!("{context}: {err}"))
    } else {
        Error::Internal(format!("{context}: {err}"))
    }
}

/// Whether an error code says the database cannot serve now but may soon: Postgres's connection
/// failures (class 08), shutting down or starting up (57P01–57P03), too many connections
/// (53300), and serialization or deadlock failures (40001, 40P01) left after the service's own
/// retries; SQLite's busy and locked (5, 6 and their extended codes).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01"
                | "57P02"
                | "57P03"
                | "53300"
                | "40001"
                | "40P01"
                | "5"
                | "6"
                | "261"
                | "517"
                | "262"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_database_errors_are_unavailable_not_internal() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "5",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "22021", "42P01", "XX000", "1"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
