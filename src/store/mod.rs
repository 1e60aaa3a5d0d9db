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
            reads: batch_read::GroupRead::start(&options.url, options.write_timeout),
            writes: batch::GroupCommit::start(&options.url, options.write_timeout)
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

/// Sorts a database failure into "unreachable" (code 14) or "unexpected" (code 13).
pub(crate) fn classify(context: &str, err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable(format!("{context}: {err}"))
        }
        other => Error::Internal(format!("{context}: {other}")),
    }
}
