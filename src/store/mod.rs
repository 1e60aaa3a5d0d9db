//! Storage adapters of the domain's [`Store`] port, one per database: [`postgres`] (grouped reads
//! and group commit on connections of their own) and [`sqlite`] (the embedded default, its own
//! group commit). What both share: the SQL that is the same on both and the mapping between rows
//! and the domain's records ([`rows`]), the optimistic command cycle ([`optimistic`]), the cache
//! of recently seen users ([`cache`]) and a small connection pool ([`connections`]). [`open`]
//! picks the database from the URL's scheme.

pub mod cache;
mod connections;
mod optimistic;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Error;
use crate::domain::store::Store;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `postgres://…` or `sqlite:…`.
    pub url: String,
    /// Most pooled connections; `None`: the database's default ([`postgres::DEFAULT_POOL_SIZE`],
    /// [`sqlite::DEFAULT_POOL_SIZE`]).
    pub max_connections: Option<u32>,
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

/// Connects to the database of `options.url` (Postgres or SQLite, by its scheme) and applies
/// its pending migrations.
pub async fn open(options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    sqlx::any::install_default_drivers();
    let url = options.url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(options).await?))
    } else {
        anyhow::bail!("DATABASE_URL must start with postgres:// or sqlite: (got another scheme)")
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
/// (53300), serialization or deadlock failures (40001, 40P01) left after the service's own
/// retries, a write reaching a node that is no longer the primary (25006, in the moment before a
/// balancer in front of a failing-over cluster moves); SQLite's busy and locked (5, 6 and their
/// extended codes).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01"
                | "57P02"
                | "57P03"
                | "53300"
                | "25006"
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
            "08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "25006", "5",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "22021", "42P01", "XX000", "1"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
