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
//!
//! sqlx runs each SQLite connection on a thread of its own and every statement is a round trip
//! to it; those hand-offs, not SQLite's work, were most of a write's cost. So the writers own one
//! connection apart from the pool (a waiting writer holds no pool connection, and no other
//! connection's write invalidates its page cache), and a group's transaction travels as one
//! multi-statement query per 8 writes, in which each write's statements are conditional on its
//! user's version ([`write_batch`]). Measurements in docs/performance.md.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::{Semaphore, oneshot};

use super::StoreOptions;
use super::cache::SnapshotCache;
use super::classify;
use super::connections::{self, Connections, to_the_end};
use super::optimistic::{self, Attempt, decide_on};
use super::rows::{
    self, EVENT_COLUMNS, RowValues, TOTP_COLUMNS, TOTP_ON_CONFLICT, TotpRow, select_snapshot,
    snapshot_from_row,
};
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

/// The store on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    connections: Arc<Connections>,
    /// This process's writers, in order (see the module's summary), and the one connection they
    /// write on (opened when first needed, and again after a failure).
    writer: Arc<tokio::sync::Mutex<Option<AnyConnection>>>,
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
        self.with_writer(async |conn| {
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

    /// Runs `work` on the writer connection under the writer lock. After a database failure the
    /// connection's state is unknown, so it is closed and the next writer opens another.
    async fn with_writer<T>(
        &self,
        work: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut writer = self.writer.lock().await;
        let conn = match &mut *writer {
            Some(conn) => conn,
            empty => empty.insert(self.connections.connect_apart().await?),
        };
        let result = work(conn).await;
        if result.as_ref().is_err_and(Error::is_server_fault) {
            *writer = None;
        }
        result
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
            let written = self.write(rows, expected_version).await?;
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
    async fn write(&self, rows: RowValues, expected_version: u64) -> Result<bool, Error> {
        let (done, mut outcome) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending writes lock")
            .push(PendingWrite {
                rows,
                expected_version,
                done,
            });
        self.with_writer(async |conn| {
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
                // One write may be at fault (a value the database refuses): each is then
                // written in a transaction of its own, so that only the faulty one fails.
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
            (&mut outcome)
                .await
                .map_err(|_| Error::Internal("a pending write was dropped".into()))?
        })
        .await
    }
}

/// Most writes in one query: each binds about twenty values, and SQLite takes at most 32,766.
const WRITES_PER_QUERY: usize = 8;

/// Writes a batch of conditional writes in one `BEGIN IMMEDIATE` transaction (the write lock is
/// taken at once: the version checks and the writes after them cannot interleave with another
/// writer); answers for each whether it was written. A failed statement fails the batch.
///
/// The transaction travels as one multi-statement query (more only past [`WRITES_PER_QUERY`]):
/// every statement is a round trip to the connection's thread, and those hand-offs, not SQLite's
/// work, were most of a write's cost (docs/performance.md). Within it each write's statements are
/// conditional on its user's version ([`push_write`]), so no answer is needed between them.
async fn write_batch(conn: &mut AnyConnection, batch: &[PendingWrite]) -> Result<Vec<bool>, Error> {
    let chunks: Vec<&[PendingWrite]> = batch.chunks(WRITES_PER_QUERY).collect();
    let mut written = vec![false; batch.len()];
    for (index, chunk) in chunks.iter().enumerate() {
        let mut query = BatchQuery::default();
        if index == 0 {
            query.sql.push_str("BEGIN IMMEDIATE;\n");
        }
        let first = index * WRITES_PER_QUERY;
        for (offset, write) in chunk.iter().enumerate() {
            push_write(
                &mut query,
                first + offset,
                &write.rows,
                write.expected_version,
            );
        }
        if index == chunks.len() - 1 {
            query.sql.push_str("COMMIT;\n");
        }
        match query.run(conn).await {
            Ok(positions) => {
                for position in positions {
                    if let Some(slot) = written.get_mut(position) {
                        *slot = true;
                    }
                }
            }
            Err(error) => {
                // Whatever the query left open is undone; "no transaction" is fine too.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(error);
            }
        }
    }
    Ok(written)
}

/// Appends the statements of one conditional write, the batch's `position`-th: its events and
/// TOTP change, each only if the user's row is still at `expected_version`, then the user's
/// update on the same condition, which answers `position` when it happened. The update comes
/// last, so every statement before it sees the version it checks.
fn push_write(query: &mut BatchQuery, position: usize, rows: &RowValues, expected_version: u64) {
    let user = &rows.user;
    let user_id = query.text(&user.user_id);
    let version = query.int(expected_version as i64);
    let unchanged =
        format!("EXISTS (SELECT 1 FROM users WHERE user_id = {user_id} AND version = {version})");
    if !rows.events.is_empty() {
        let command_id = query.text(&rows.command_id);
        let values: Vec<String> = rows
            .events
            .iter()
            .map(|event| {
                format!(
                    "({user_id}, {}, {}, {}, {}, {}, {}, {command_id})",
                    query.int(event.sequence),
                    query.text(event.event_type),
                    query.text(&event.payload),
                    query.text(&event.resource_owner),
                    query.text(&event.creator),
                    query.int(event.created_at),
                )
            })
            .collect();
        query.sql.push_str(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM (VALUES {}) WHERE {unchanged};\n",
            values.join(", ")
        ));
    }
    match &rows.totp {
        TotpRow::Keep => {}
        TotpRow::Put(put) => {
            let values = [
                user_id.clone(),
                query.text(put.state),
                query.text(&put.key_id),
                query.blob(&put.secret_sealed),
                query.int(put.digits),
                query.int(put.period),
                query.text(put.algorithm),
                query.optional_int(put.last_used_step),
                query.int(put.created_at),
            ];
            query.sql.push_str(&format!(
                "INSERT INTO totp ({TOTP_COLUMNS}) SELECT {} WHERE {unchanged} {TOTP_ON_CONFLICT};\n",
                values.join(", ")
            ));
        }
        TotpRow::Delete => query.sql.push_str(&format!(
            "DELETE FROM totp WHERE user_id = {user_id} AND {unchanged};\n"
        )),
    }
    let set = format!(
        "state = {}, sequence = {}, change_date = {}, failed_attempts = {}, locked_until = {}, \
         recovery_codes = {}, version = version + 1",
        query.text(user.state),
        query.int(user.sequence),
        query.int(user.change_date),
        query.int(user.failed_attempts),
        query.optional_int(user.locked_until),
        query.text(&user.recovery_codes),
    );
    query.sql.push_str(&format!(
        "UPDATE users SET {set} WHERE user_id = {user_id} AND version = {version} \
         RETURNING {position};\n"
    ));
}

/// A multi-statement query being built: its text, with `$n` placeholders numbered across all of
/// its statements, and the values they stand for, in that order.
#[derive(Default)]
struct BatchQuery {
    sql: String,
    values: Vec<Value>,
}

/// A value bound to a [`BatchQuery`].
enum Value {
    Text(String),
    Int(Option<i64>),
    Blob(Vec<u8>),
}

impl BatchQuery {
    /// Adds `value`; answers its placeholder.
    fn push(&mut self, value: Value) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.push(Value::Text(value.to_owned()))
    }

    fn int(&mut self, value: i64) -> String {
        self.push(Value::Int(Some(value)))
    }

    fn optional_int(&mut self, value: Option<i64>) -> String {
        self.push(Value::Int(value))
    }

    fn blob(&mut self, value: &[u8]) -> String {
        self.push(Value::Blob(value.to_vec()))
    }

    /// Runs the statements; answers the positions the `RETURNING`s gave.
    async fn run(self, conn: &mut AnyConnection) -> Result<Vec<usize>, Error> {
        let mut query = sqlx::query(&self.sql);
        for value in self.values {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Int(int) => query.bind(int),
                Value::Blob(blob) => query.bind(blob),
            };
        }
        let rows = query
            .fetch_all(conn)
            .await
            .map_err(|e| classify("writing users' changes", e))?;
        rows.iter()
            .map(|row| row.try_get::<i64, _>(0).map(|position| position as usize))
            .collect::<Result<_, _>>()
            .map_err(|e| classify("reading which writes happened", e))
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
        self.connections.close().await;
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.close().await;
        }
    }

    async fn ping(&self) -> Result<(), Error> {
        connections::ping(&self.connections, &self.admitted).await
    }
}
