//! The store on Postgres. A command's read and write, and a query's read, go to tasks that group
//! those of concurrent requests into shared statements: [`writer`] (group commit, and the
//! read-decide-write of commands on users not at hand) and [`reader`] (grouped reads), each on
//! connections of its own ([`session`]). Inserting a user, listing secrets to re-seal and pings
//! use a small pool. Recently seen users' state is kept in process ([`SnapshotCache`]).

pub mod reader;
mod session;
pub mod writer;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::migrate::Migrator;
use tokio::sync::Semaphore;

use super::StoreOptions;
use super::cache::SnapshotCache;
use super::connections::{self, Connections, to_the_end};
use super::optimistic;
use super::rows::{self, RowValues};
use crate::domain::error::Error;
use crate::domain::store::{Changes, Committed, ConnectionStats, Decide, Snapshot, Store};
use reader::GroupRead;
use writer::GroupCommit;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Pool size when none is configured.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// The store on one Postgres database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    connections: Arc<Connections>,
    reads: GroupRead,
    writes: GroupCommit,
    cache: Arc<SnapshotCache>,
    /// Places for the operations that run on the pool (see [`to_the_end`]).
    admitted: Arc<Semaphore>,
}

impl PostgresStore {
    /// Connects (the pool, the reader tasks and the writer thread) and applies the migrations.
    pub async fn open(options: &StoreOptions) -> anyhow::Result<Self> {
        let connections = Connections::open(
            &options.url,
            &[],
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
        Ok(PostgresStore {
            connections: Arc::new(connections),
            reads: GroupRead::start(&options.url, options.write_timeout, options.queue_capacity),
            writes: GroupCommit::start(&options.url, options.write_timeout, options.queue_capacity)
                .map_err(|e| anyhow::anyhow!("starting the database writer: {e}"))?,
            cache: Arc::new(SnapshotCache::new(options.cache_capacity)),
            admitted: Arc::new(Semaphore::new(options.queue_capacity.max(1))),
        })
    }
}

/// A command's read and write, and a query's read, are requests queued to the reader and writer
/// tasks, which finish them whether or not the request still waits: they need no task of their
/// own (one task switch less per request). The rest runs on the pool, each in a task of its own.
#[async_trait]
impl Store for PostgresStore {
    /// An insert whose commit was sent but whose answer was lost (the connection broke) is tried
    /// again under the same command id until the database answers: the retry finds the user and
    /// its events if the first attempt landed (see `rows::insert_user`), and inserts them if not.
    async fn insert_user(&self, changes: Changes) -> Result<Committed, Error> {
        let (connections, cache) = (self.connections.clone(), self.cache.clone());
        to_the_end(&self.admitted, async move {
            let rows = RowValues::of(&changes);
            let started = Instant::now();
            let mut in_doubt = false;
            loop {
                let inserted = connections
                    .with(async |conn| {
                        let mut tx = conn
                            .begin()
                            .await
                            .map_err(|e| super::classify("beginning a transaction", e))?;
                        if let Err(error) = rows::insert_user(&mut tx, &changes, &rows).await {
                            return rows::commit_or_roll_back(tx, Err(error)).await;
                        }
                        in_doubt = true;
                        tx.commit()
                            .await
                            .map_err(|e| super::classify("committing", e))
                    })
                    .await;
                match inserted {
                    Err(Error::Unavailable(_))
                        if in_doubt && started.elapsed() < writer::IN_DOUBT_PATIENCE =>
                    {
                        tokio::time::sleep(writer::IN_DOUBT_RETRY_PAUSE).await;
                    }
                    inserted => break inserted?,
                }
            }
            cache.put(optimistic::state_after(&changes, None, 0));
            Ok(optimistic::committed(changes))
        })
        .await
    }

    async fn load(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        let snapshot = self.reads.read(user_id).await?;
        if let Some(snapshot) = &snapshot {
            self.cache.put(snapshot.clone());
        }
        Ok(snapshot)
    }

    async fn update(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        optimistic::update(&self.cache, user_id, decide, async |cached, decide| {
            optimistic::attempt_once(&self.cache, &self.writes, user_id, cached, decide).await
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
