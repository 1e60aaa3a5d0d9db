//! The store on SQLite, the embedded default: one file, WAL, one writer at a time.
//!
//! A command reads the user (or takes its cached state), lets the domain decide, and writes the
//! outcome on the condition that the user's row is still at the version it read (see
//! [`super::optimistic`]). Writes are grouped: the command that takes this process's writer lock
//! writes every command waiting for it in one `BEGIN IMMEDIATE` transaction (one commit and one
//! sync for the lot). Queueing the writers here, in order, spares them SQLite's busy handler,
//! which polls with sleeps of up to 100 ms; other processes on the same file still meet the busy
//! timeout. Every operation runs on a task of its own, so it lands whole even when its request
//! stops waiting.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Connection};
use tokio::sync::{Semaphore, oneshot};

use super::StoreOptions;
use super::cache::SnapshotCache;
use super::classify;
use super::connections::{self, Connections, to_the_end};
use super::optimistic::{self, Attempt, decide_on};
use super::rows::{self, RowValues, select_snapshot, snapshot_from_row};
use crate::domain::error::Error;
use crate::domain::store::{Changes, Committed, ConnectionStats, Decide, Snapshot, Store};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Pool size when none is configured: a SQLite connection has a thread and a page cache of its
/// own, and only one writes at a time.
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

/// Updates the user row if its version is `$7`.
const UPDATE_USER_IF_UNCHANGED: &str = "UPDATE users SET state = $2, sequence = $3, \
     change_date = $4, failed_attempts = $5, locked_until = $6, recovery_codes = $8, \
     version = version + 1 WHERE user_id = $1 AND version = $7";

/// The store on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    connections: Arc<Connections>,
    /// This process's writers, in order (see the module's summary).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Conditional writes waiting for the writer lock: whoever takes it writes them all.
    pending: Arc<Mutex<Vec<PendingWrite>>>,
    cache: Arc<SnapshotCache>,
    /// Places for operations (see [`to_the_end`]).
    admitted: Arc<Semaphore>,
}

/// A command's conditional write, waiting to join the next group commit.
struct PendingWrite {
    rows: RowValues,
    expected_version: u64,
    /// Whether the write happened (false: the version had moved on).
    done: oneshot::Sender<Result<bool, Error>>,
}

impl SqliteStore {
    /// Opens (creating it if needed, with `?mode=rwc`) and migrates the file of `options.url`.
    pub async fn open(options: &StoreOptions) -> anyhow::Result<Self> {
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
        Ok(SqliteStore {
            connections: Arc::new(connections),
            writer: Arc::default(),
            pending: Arc::default(),
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
        // Connection first, then the writer lock: the order `update` takes them in. (The other
        // order deadlocked: queued writers held every connection.)
        self.connections
            .with(async |conn| {
                let _writer = self.writer.lock().await;
                let mut tx = conn
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| classify("beginning a transaction", e))?;
                let inserted = rows::insert_user(&mut tx, &changes, &RowValues::of(&changes)).await;
                rows::commit_or_roll_back(tx, inserted).await
            })
            .await?;
        self.cache.put(optimistic::state_after(&changes, None, 0));
        Ok(optimistic::committed(changes))
    }

    async fn update_now(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        optimistic::update(&self.cache, user_id, decide, async |cached, decide| {
            let snapshot = match cached {
                Some(snapshot) => Some(snapshot),
                None => self.load_now(user_id).await?,
            };
            let decision = match decide_on(user_id, snapshot, &decide) {
                Ok(decision) => decision,
                Err(refusal) => return Ok(Attempt::Refused(refusal)),
            };
            let rows = RowValues::of(&decision.changes);
            let expected_version = decision.expected_version;
            let written = self
                .connections
                .with(async |conn| self.write(conn, rows, expected_version).await)
                .await?;
            Ok(if written {
                Attempt::Written(decision)
            } else {
                Attempt::Lost
            })
        })
        .await
    }

    /// Writes `rows` if the user's row is still at `expected_version`; `false` if it was not. The
    /// write joins those of the commands waiting for the writer lock: the command that takes the
    /// lock writes every waiting one in one transaction, and answers each.
    async fn write(
        &self,
        conn: &mut AnyConnection,
        rows: RowValues,
        expected_version: u64,
    ) -> Result<bool, Error> {
        let (done, mut outcome) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending writes lock")
            .push(PendingWrite {
                rows,
                expected_version,
                done,
            });
        let _writer = self.writer.lock().await;
        // The previous holder of the lock may have written ours already.
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let batch = std::mem::take(&mut *self.pending.lock().expect("pending writes lock"));
        match write_batch(conn, &batch).await {
            Ok(written) => {
                for (write, written) in batch.into_iter().zip(written) {
                    let _ = write.done.send(Ok(written));
                }
            }
            // One write may be at fault (a value the database refuses): each is then written in
            // a transaction of its own, so that only the faulty one fails.
            Err(error) if batch.len() > 1 && !matches!(error, Error::Unavailable(_)) => {
                for write in batch {
                    let alone = write_batch(conn, std::slice::from_ref(&write)).await;
                    let _ = write.done.send(alone.map(|written| written[0]));
                }
            }
            Err(error) => {
                for write in batch {
                    let _ = write.done.send(Err(error.clone()));
                }
            }
        }
        outcome
            .await
            .map_err(|_| Error::Internal("a pending write was dropped".into()))?
    }
}

/// Writes a batch of conditional writes in one `BEGIN IMMEDIATE` transaction (the write lock is
/// taken at once: the version checks and the writes after them cannot interleave with another
/// writer); answers for each whether it was written. A failed statement fails the batch.
async fn write_batch(conn: &mut AnyConnection, batch: &[PendingWrite]) -> Result<Vec<bool>, Error> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify("beginning a transaction", e))?;
    let mut written = Vec::with_capacity(batch.len());
    for write in batch {
        written.push(write_if_unchanged(&mut tx, &write.rows, write.expected_version).await?);
    }
    tx.commit().await.map_err(|e| classify("committing", e))?;
    Ok(written)
}

/// One conditional write inside a transaction: nothing is written unless the user's row is still
/// at `expected_version`.
async fn write_if_unchanged(
    conn: &mut AnyConnection,
    rows: &RowValues,
    expected_version: u64,
) -> Result<bool, Error> {
    let user = &rows.user;
    let updated = sqlx::query(UPDATE_USER_IF_UNCHANGED)
        .bind(user.user_id.clone())
        .bind(user.state)
        .bind(user.sequence)
        .bind(user.change_date)
        .bind(user.failed_attempts)
        .bind(user.locked_until)
        .bind(expected_version as i64)
        .bind(user.recovery_codes.clone())
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("updating a user", e))?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    rows::insert_events(conn, rows).await?;
    rows::write_totp(conn, &user.user_id, &rows.totp).await?;
    Ok(true)
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
        self.connections.close().await;
    }

    async fn ping(&self) -> Result<(), Error> {
        connections::ping(&self.connections, &self.admitted).await
    }
}
