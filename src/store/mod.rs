//! Storage adapters. [`open`] picks the database from the URL scheme (`postgres://` or
//! `sqlite://`), runs the migrations and returns the domain's [`Store`](crate::domain::store::Store).
//!
//! One implementation ([`sql::SqlStore`]) serves both databases through sqlx's `Any` driver: the
//! SQL is the same, and the two differences (how a write transaction locks, and the migration
//! folder) are decided by [`Dialect`] in one place.

pub mod sql;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Executor, migrate::Migrator};

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

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
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
    let pool = AnyPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        // sqlx pings a connection before each hand-out by default: a round trip per query. A
        // dead connection shows as an I/O error on use instead (code 14), and the pool drops it.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // WAL lets readers run beside the single writer; the busy timeout makes a
                    // second writer wait for BEGIN IMMEDIATE instead of failing at once.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                }
                Ok(())
            })
        })
        .connect(&options.url)
        .await?;
    Ok(SqlStore::new(pool, dialect))
}

impl SqlStore {
    /// Applies the pending migrations of this store's dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.dialect().migrator().run(self.pool()).await?;
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
