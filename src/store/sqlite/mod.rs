//! The store on SQLite, the embedded default: one file, WAL, one writer at a time.
//!
//! A command reads the user (or takes its cached state), lets the domain decide, and writes the
//! outcome on the condition that the user's row is still at the version it read (see
//! [`super::optimistic`]). Writes are grouped: one thread of this process writes them, every
//! write waiting for it in one `BEGIN IMMEDIATE` transaction (one commit and one sync for the
//! lot; see [`writer`]); a command on a user not at hand lets that thread read, decide and write
//! in one go. Another thread copies the WAL back into the database file beside the writer
//! ([`checkpoint`]), so that no commit waits for a checkpoint. Queueing the writes here, in
//! order, spares them SQLite's busy handler, which polls with sleeps of up to 100 ms; other
//! processes on the same file still meet the busy timeout. Queries (GetUser and the like) read
//! through a pool of sqlx connections. Every operation runs on a task of its own, so it lands
//! whole even when its request stops waiting.

mod checkpoint;
mod writer;

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::AnyConnection;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::Semaphore;

use super::StoreOptions;
use super::cache::SnapshotCache;
use super::classify;
use super::connections::{self, Connections, to_the_end};
use super::optimistic;
use super::rows::{NewUserRow, RowValues, select_snapshot, snapshot_from_row};
use crate::domain::error::{self, Error};
use crate::domain::store::{Changes, Committed, ConnectionStats, Decide, Snapshot, Store};
use writer::{Write, Writer};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Pool size when none is configured: a SQLite connection has a thread and a page cache of its
/// own, and the pool only reads (the writer has a connection of its own).
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// Each connection's settings: WAL lets readers run beside the single writer; the busy timeout
/// makes a second writer (another process on the same file) wait for `BEGIN IMMEDIATE` instead of
/// failing at once; a 1 MiB page cache instead of 2 MiB (a command touches a few pages found by
/// primary key, and the pool's caches were a large share of the process's memory;
/// docs/performance.md).
const CONNECTION_SETUP: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA cache_size = -1024",
];

const SELECT_SNAPSHOT: &str = select_snapshot!("u.user_id = $1");

/// The store on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    connections: Arc<Connections>,
    /// Every write of this process goes through it (see the module's summary).
    writer: Arc<Writer>,
    cache: Arc<SnapshotCache>,
    /// Places for operations (see [`to_the_end`]).
    admitted: Arc<Semaphore>,
}

impl SqliteStore {
    /// Opens (creating it if needed, with `?mode=rwc`) and migrates the file of `options.url`.
    pub async fn open(options: &StoreOptions) -> anyhow::Result<Self> {
        let options_of_url = SqliteConnectOptions::from_str(&options.url)
            .context("reading the SQLite database URL")?;
        anyhow::ensure!(
            !options_of_url
                .get_filename()
                .to_string_lossy()
                .starts_with("file:sqlx-in-memory"),
            "an in-memory SQLite database cannot be shared by the writer's connection: use a file"
        );
        let connections = Connections::open(
            &options.url,
            CONNECTION_SETUP,
            options.max_connections.unwrap_or(DEFAULT_POOL_SIZE),
            options.acquire_timeout,
        )
        .await?;
        connections
            .with(async |conn| {
                MIGRATIONS
                    .run(conn)
                    .await
                    .map_err(|e| Error::Internal(format!("applying the migrations: {e}")))
            })
            .await?;
        let writer = Writer::start(options_of_url.get_filename().to_owned())
            .context("starting the SQLite writer's thread")?;
        Ok(SqliteStore {
            connections: Arc::new(connections),
            writer: Arc::new(writer),
            cache: Arc::new(SnapshotCache::new(options.cache_capacity)),
            admitted: Arc::new(Semaphore::new(options.queue_capacity.max(1))),
        })
    }

    /// Reads from the database (never from the cache), and remembers what it read.
    async fn load_now(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        let snapshot = self
            .connections
            .with(async |conn| read_snapshot(conn, user_id).await)
            .await?;
        if let Some(snapshot) = &snapshot {
            self.cache.put(snapshot.clone());
        }
        Ok(snapshot)
    }

    async fn insert_user_now(&self, changes: Changes) -> Result<Committed, Error> {
        let write = Write::Insert {
            user: Box::new(NewUserRow::of(&changes)?),
            rows: RowValues::of(&changes),
        };
        if !self.writer.write(write).await? {
            return Err(error::USER_ALREADY_EXISTS.into());
        }
        self.cache.put(optimistic::state_after(&changes, None, 0));
        Ok(optimistic::committed(changes))
    }

    async fn update_now(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        optimistic::update(&self.cache, user_id, decide, async |cached, decide| {
            optimistic::attempt_once(&self.cache, &*self.writer, user_id, cached, decide).await
        })
        .await
    }
}

/// Reads a user and its TOTP in one statement (so the two agree).
async fn read_snapshot(conn: &mut AnyConnection, user_id: &str) -> Result<Option<Snapshot>, Error> {
    let row = sqlx::query(SELECT_SNAPSHOT)
        .bind(user_id.to_owned())
        .fetch_optional(conn)
        .await
        .map_err(|e| classify("loading a user", e))?;
    row.as_ref()
        .map(snapshot_from_row)
        .transpose()
        .map_err(|e| classify("reading a user row", e))
}

/// Every operation runs in a task of its own (see [`to_the_end`]).
#[async_trait]
impl Store for SqliteStore {
    async fn insert_user(&self, changes: Changes) -> Result<Committed, Error> {
        let store = self.clone();
        to_the_end(&self.admitted, async move {
            store.insert_user_now(changes).await
        })
        .await
    }

    async fn load(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        let (store, user_id) = (self.clone(), user_id.to_owned());
        to_the_end(
            &self.admitted,
            async move { store.load_now(&user_id).await },
        )
        .await
    }

    async fn update(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        let (store, user_id) = (self.clone(), user_id.to_owned());
        to_the_end(&self.admitted, async move {
            store.update_now(&user_id, decide).await
        })
        .await
    }

    async fn totp_sealed_with_other_key(
        &self,
        key_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        connections::totp_sealed_with_other_key(
            &self.connections,
            &self.admitted,
            key_id,
            after,
            limit,
        )
        .await
    }

    fn connection_stats(&self) -> ConnectionStats {
        self.connections.stats()
    }

    async fn close(&self) {
        self.writer.close().await;
        self.connections.close().await;
    }

    async fn ping(&self) -> Result<(), Error> {
        connections::ping(&self.connections, &self.admitted).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The pool's connections and the writer's would each see a database of their own.
    #[tokio::test]
    async fn an_in_memory_database_is_refused() {
        sqlx::any::install_default_drivers();
        let refused = SqliteStore::open(&StoreOptions {
            url: "sqlite::memory:".into(),
            max_connections: Some(1),
            acquire_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            cache_capacity: 0,
            queue_capacity: 8,
        })
        .await;
        let message = refused.err().expect("refused").to_string();
        assert!(message.contains("in-memory"), "{message}");
    }
}
