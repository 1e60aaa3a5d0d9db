//! The SQL behind the storage port, for Postgres and SQLite alike.
//!
//! A write is optimistic: read the user (one statement), let the domain decide, then write the
//! user row, the events and the TOTP row all or nothing, on the condition that the row's
//! `version` is still the one read. No lock is held while the domain decides. Writes are grouped
//! with those of concurrent commands: on Postgres one writer reads, decides and writes the
//! commands that queue up in two shared statements ([`Grouped`]); on SQLite the command that
//! takes the writer lock writes every command waiting for it in one `BEGIN IMMEDIATE`
//! transaction. A lost race reads and decides again, so the decision always rests on the state it
//! changes. The first decision may rest on the user's cached state instead of a read
//! ([`SnapshotCache`]): the same version condition guards it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use sqlx::any::AnyArguments;
use tokio::sync::oneshot;

use sqlx::{Any, AnyConnection, ColumnIndex, Connection, Decode, Row, Type, query::Query};

use super::batch::{Decided, SharedDecide};
use super::cache::SnapshotCache;
use super::connections::{Connections, Lease};
use super::{Dialect, Grouped, classify};
use crate::domain::clock::Timestamp;
use crate::domain::error::{self, Error};
use crate::domain::service::details_of;
use crate::domain::store::{
    Changes, Committed, ConnectionStats, Decide, Snapshot, Store, TotpChange,
};
use crate::domain::types::{Profile, SealedSecret, TotpRecord, TotpState, UserRecord, UserState};

/// The store over one connection pool.
#[derive(Clone, Debug)]
pub struct SqlStore {
    connections: Arc<Connections>,
    dialect: Dialect,
    /// Postgres: commands' reads and conditional writes go out in batches (see [`Grouped`]).
    grouped: Option<Grouped>,
    /// SQLite has one writer at a time. Queueing this process's writers here, in order, spares
    /// them SQLite's busy handler, which polls with sleeps of up to 100 ms (long tail latencies).
    /// Other processes on the same file still meet the busy timeout.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    /// SQLite: conditional writes waiting for the writer lock. Whoever takes the lock writes all
    /// that wait, in one transaction (group commit: one commit and one sync for the lot).
    sqlite_pending: Arc<std::sync::Mutex<Vec<PendingWrite>>>,
    /// Recently seen users' last known state: a command may decide on it without a read (see
    /// [`SnapshotCache`] for why that is safe).
    cache: Arc<SnapshotCache>,
    /// Places for operations run on a task of their own (all of SQLite's): when none is free, an
    /// operation is refused at once instead of queueing without bound.
    admitted: Arc<tokio::sync::Semaphore>,
}

type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// SQLite: a command's conditional write, waiting to join the next group commit.
#[derive(Debug)]
struct PendingWrite {
    changes: Arc<Changes>,
    expected_version: u64,
    /// Whether the write happened (false: the version had moved on).
    done: oneshot::Sender<Result<bool, Error>>,
}

/// The columns of a snapshot: a user and its TOTP, if any.
macro_rules! select_snapshot {
    ($condition:literal) => {
        concat!(
            "SELECT u.user_id, u.resource_owner, u.username, u.email, u.email_verified, \
             u.profile, u.state, u.sequence, u.created_at, u.change_date, u.failed_attempts, \
             u.locked_until, u.version, t.state AS totp_state, t.key_id, t.secret_sealed, \
             t.digits, t.period, t.last_used_step, t.created_at AS totp_created_at \
             FROM users u LEFT JOIN totp t ON t.user_id = u.user_id WHERE ",
            $condition
        )
    };
}

const SELECT_SNAPSHOT: &str = select_snapshot!("u.user_id = $1");

/// Postgres: the snapshots of the users in the text array `$1` (see [`super::batch_read`]).
pub(super) const SELECT_SNAPSHOTS: &str = select_snapshot!("u.user_id = ANY($1)");

const INSERT_USER: &str = "INSERT INTO users (user_id, resource_owner, username, email, \
     email_verified, profile, state, sequence, created_at, change_date, failed_attempts, \
     locked_until, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0) \
     ON CONFLICT (user_id) DO NOTHING";

/// Updates the user row if its version is `$7`; binds as [`bind_user_update`].
const UPDATE_USER_IF_UNCHANGED: &str = "UPDATE users SET state = $2, sequence = $3, \
     change_date = $4, failed_attempts = $5, locked_until = $6, version = version + 1 \
     WHERE user_id = $1 AND version = $7";

const TOTP_COLUMNS: &str =
    "user_id, state, key_id, secret_sealed, digits, period, last_used_step, created_at";

const TOTP_ON_CONFLICT: &str = "ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, \
     key_id = excluded.key_id, secret_sealed = excluded.secret_sealed, digits = excluded.digits, \
     period = excluded.period, last_used_step = excluded.last_used_step, \
     created_at = excluded.created_at";

const EVENT_COLUMNS: &str =
    "user_id, sequence, event_type, payload, resource_owner, creator, created_at";

/// `($first, $first+1, …)`: `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    format!("({})", list.join(", "))
}

fn bind_user_update<'q>(
    query: AnyQuery<'q>,
    user: &UserRecord,
    expected_version: u64,
) -> AnyQuery<'q> {
    query
        .bind(user.user_id.clone())
        .bind(user.state.as_str())
        .bind(user.sequence as i64)
        .bind(user.change_date.0)
        .bind(i64::from(user.failed_attempts))
        .bind(user.locked_until.map(|t| t.0))
        .bind(expected_version as i64)
}

fn bind_totp<'q>(query: AnyQuery<'q>, user_id: &str, totp: &TotpRecord) -> AnyQuery<'q> {
    query
        .bind(user_id.to_owned())
        .bind(totp.state.as_str())
        .bind(totp.secret.key_id.clone())
        .bind(totp.secret.ciphertext.clone())
        .bind(i64::from(totp.digits))
        .bind(i64::from(totp.period))
        .bind(totp.last_used_step)
        .bind(totp.created_at.0)
}

fn bind_events<'q>(mut query: AnyQuery<'q>, changes: &Changes) -> AnyQuery<'q> {
    let user = &changes.user;
    let first = user.sequence - changes.events.len() as u64 + 1;
    for (offset, event) in changes.events.iter().enumerate() {
        query = query
            .bind(user.user_id.clone())
            .bind((first + offset as u64) as i64)
            .bind(event.event_type)
            .bind(event.payload.to_string())
            .bind(user.resource_owner.clone())
            .bind(changes.creator.clone())
            .bind(changes.at.0);
    }
    query
}

/// `INSERT INTO events … VALUES (…), (…)` for `count` events, parameters from `first`.
fn insert_events_sql(count: usize, first: usize) -> String {
    let rows: Vec<String> = (0..count).map(|i| placeholders(first + i * 7, 7)).collect();
    format!(
        "INSERT INTO events ({EVENT_COLUMNS}) VALUES {}",
        rows.join(", ")
    )
}

fn committed(changes: Changes) -> Result<Committed, Error> {
    let result = Committed {
        details: details_of(&changes.user),
        user: changes.user,
    };
    match changes.then_fail {
        Some(refusal) => Err(refusal),
        None => Ok(result),
    }
}

/// Reads a snapshot row (of either driver). A row that does not parse is a damaged database: an
/// internal error.
pub(super) fn snapshot_from_row<R: Row>(row: &R) -> Result<Snapshot, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let state: String = row.try_get("state")?;
    let profile: String = row.try_get("profile")?;
    let bad = |what: &str| sqlx::Error::Decode(format!("stored {what} does not parse").into());
    let user = UserRecord {
        user_id: row.try_get("user_id")?,
        resource_owner: row.try_get("resource_owner")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        profile: serde_json::from_str::<Profile>(&profile).map_err(|_| bad("profile"))?,
        state: UserState::parse(&state).ok_or_else(|| bad("user state"))?,
        sequence: row.try_get::<i64, _>("sequence")? as u64,
        created_at: Timestamp(row.try_get("created_at")?),
        change_date: Timestamp(row.try_get("change_date")?),
        failed_attempts: row.try_get::<i64, _>("failed_attempts")? as u32,
        locked_until: row
            .try_get::<Option<i64>, _>("locked_until")?
            .map(Timestamp),
        version: row.try_get::<i64, _>("version")? as u64,
    };
    let totp = match row.try_get::<Option<String>, _>("totp_state")? {
        None => None,
        Some(totp_state) => Some(TotpRecord {
            state: TotpState::parse(&totp_state).ok_or_else(|| bad("TOTP state"))?,
            secret: SealedSecret {
                key_id: row.try_get("key_id")?,
                ciphertext: row.try_get("secret_sealed")?,
            },
            digits: row.try_get::<i64, _>("digits")? as u32,
            period: row.try_get::<i64, _>("period")? as u32,
            last_used_step: row.try_get("last_used_step")?,
            created_at: Timestamp(row.try_get("totp_created_at")?),
        }),
    };
    Ok(Snapshot { user, totp })
}

impl SqlStore {
    pub fn new(
        connections: Connections,
        dialect: Dialect,
        grouped: Option<Grouped>,
        cache: SnapshotCache,
        queue_capacity: usize,
    ) -> Self {
        SqlStore {
            connections: Arc::new(connections),
            dialect,
            grouped,
            sqlite_writer: Arc::new(tokio::sync::Mutex::new(())),
            sqlite_pending: Arc::default(),
            cache: Arc::new(cache),
            admitted: Arc::new(tokio::sync::Semaphore::new(queue_capacity.max(1))),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs `work` on a pooled connection. After a database failure the connection's state is
    /// unknown (a half-read answer, an open transaction), so it is dropped instead of reused; a
    /// domain refusal leaves it clean.
    pub(super) async fn with_connection<T>(
        &self,
        work: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut lease: Lease<'_> = self
            .connections
            .acquire()
            .await
            .map_err(|e| classify("taking a database connection", e))?;
        let result = work(lease.connection()).await;
        if matches!(&result, Err(error) if error.is_server_fault()) {
            lease.discard();
        }
        result
    }

    /// Writes `changes` if the user's row is still at `expected_version`; `false` if it was not.
    /// The write joins those of the commands waiting for the writer lock: the command that takes
    /// the lock writes every waiting one in one transaction, and answers each.
    async fn write_sqlite(
        &self,
        conn: &mut AnyConnection,
        changes: Arc<Changes>,
        expected_version: u64,
    ) -> Result<bool, Error> {
        let (done, mut outcome) = oneshot::channel();
        self.sqlite_pending
            .lock()
            .expect("pending writes lock")
            .push(PendingWrite {
                changes,
                expected_version,
                done,
            });
        let _writer = self.sqlite_writer.lock().await;
        // The previous holder of the lock may have written ours already.
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let batch = std::mem::take(&mut *self.sqlite_pending.lock().expect("pending writes lock"));
        match write_sqlite_batch(conn, &batch).await {
            Ok(written) => {
                for (write, written) in batch.into_iter().zip(written) {
                    let _ = write.done.send(Ok(written));
                }
            }
            // One write may be at fault (a value the database refuses): each is then written in
            // a transaction of its own, so that only the faulty one fails.
            Err(error) if batch.len() > 1 && !matches!(error, Error::Unavailable(_)) => {
                for write in batch {
                    let alone = write_sqlite_batch(conn, std::slice::from_ref(&write)).await;
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
async fn write_sqlite_batch(
    conn: &mut AnyConnection,
    batch: &[PendingWrite],
) -> Result<Vec<bool>, Error> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify("beginning a transaction", e))?;
    let mut written = Vec::with_capacity(batch.len());
    for write in batch {
        written.push(apply_sqlite_write(&mut tx, &write.changes, write.expected_version).await?);
    }
    tx.commit().await.map_err(|e| classify("committing", e))?;
    Ok(written)
}

/// One conditional write inside a transaction: nothing is written unless the user's row is still
/// at `expected_version`.
async fn apply_sqlite_write(
    conn: &mut AnyConnection,
    changes: &Changes,
    expected_version: u64,
) -> Result<bool, Error> {
    let user = &changes.user;
    let updated = bind_user_update(
        sqlx::query(UPDATE_USER_IF_UNCHANGED),
        user,
        expected_version,
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| classify("updating a user", e))?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    if !changes.events.is_empty() {
        let sql = insert_events_sql(changes.events.len(), 1);
        bind_events(sqlx::query(&sql), changes)
            .execute(&mut *conn)
            .await
            .map_err(|e| classify("appending events", e))?;
    }
    match &changes.totp {
        TotpChange::Keep => {}
        TotpChange::Put(totp) => {
            let sql = format!(
                "INSERT INTO totp ({TOTP_COLUMNS}) VALUES {} {TOTP_ON_CONFLICT}",
                placeholders(1, 8)
            );
            bind_totp(sqlx::query(&sql), &user.user_id, totp)
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("storing the TOTP", e))?;
        }
        TotpChange::Delete => {
            sqlx::query("DELETE FROM totp WHERE user_id = $1")
                .bind(user.user_id.clone())
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("removing the TOTP", e))?;
        }
    }
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

/// A decision ready to be written: the changes and the version of the state they rest on.
#[derive(Debug)]
pub(super) struct Decision {
    pub changes: Arc<Changes>,
    pub expected_version: u64,
    /// The TOTP the changes were decided on (it stays when they keep it).
    pub totp_before: Option<TotpRecord>,
}

/// Lets the domain decide on `snapshot` of `user_id` (`None`: no such user). An `Err` is the
/// domain's refusal.
pub(super) fn decide_on(
    user_id: &str,
    snapshot: Option<Snapshot>,
    decide: &SharedDecide,
) -> Result<Decision, Error> {
    let Some(expected_version) = snapshot.as_ref().map(|s| s.user.version) else {
        // The domain refuses a missing user; changes for one would be a domain bug.
        decide(None)?;
        return Err(Error::Internal(format!(
            "changes decided for missing user {user_id}"
        )));
    };
    let totp_before = snapshot.as_ref().and_then(|s| s.totp.clone());
    Ok(Decision {
        changes: Arc::new(decide(snapshot)?),
        expected_version,
        totp_before,
    })
}

/// The user's state once `changes` are written: the row at `version`, and the TOTP row as changed
/// (or as it was, `totp_before`, if the changes keep it).
fn state_after(changes: &Changes, totp_before: Option<TotpRecord>, version: u64) -> Snapshot {
    let user = UserRecord {
        version,
        ..changes.user.clone()
    };
    let totp = match &changes.totp {
        TotpChange::Keep => totp_before,
        TotpChange::Put(totp) => Some(totp.clone()),
        TotpChange::Delete => None,
    };
    Snapshot { user, totp }
}

/// A short random pause after a lost race, growing with the attempts, so that writers on one
/// user do not collide again in lockstep.
async fn back_off(attempt: u32) {
    let ceiling_micros = 200 * u64::from(attempt.min(20)) + 100;
    let pause = rand::thread_rng().gen_range(0..ceiling_micros);
    tokio::time::sleep(Duration::from_micros(pause)).await;
}

/// The work behind the [`Store`] methods. Each runs to its end only if its caller keeps waiting;
/// the trait methods below decide which need a task of their own for that.
impl SqlStore {
    async fn insert_user_now(&self, changes: Changes) -> Result<Committed, Error> {
        let user = &changes.user;
        let profile = serde_json::to_string(&user.profile)
            .map_err(|e| Error::Internal(format!("encoding a profile: {e}")))?;
        // Connection first, then the SQLite writer queue: the order `update` takes them in.
        // (The other order deadlocked: queued writers held every connection.)
        self.with_connection(async |conn| {
            let _writer = match self.dialect {
                Dialect::Sqlite => Some(self.sqlite_writer.lock().await),
                Dialect::Postgres => None,
            };
            let begun = match self.dialect {
                Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await,
                Dialect::Postgres => conn.begin().await,
            };
            let mut tx = begun.map_err(|e| classify("beginning a transaction", e))?;
            let inserted = sqlx::query(INSERT_USER)
                .bind(user.user_id.clone())
                .bind(user.resource_owner.clone())
                .bind(user.username.clone())
                .bind(user.email.clone())
                .bind(i64::from(user.email_verified))
                .bind(profile)
                .bind(user.state.as_str())
                .bind(user.sequence as i64)
                .bind(user.created_at.0)
                .bind(user.change_date.0)
                .bind(i64::from(user.failed_attempts))
                .bind(user.locked_until.map(|t| t.0))
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("inserting a user", e))?;
            if inserted.rows_affected() == 0 {
                tx.rollback()
                    .await
                    .map_err(|e| classify("rolling back", e))?;
                return Err(error::USER_ALREADY_EXISTS.into());
            }
            let sql = insert_events_sql(changes.events.len(), 1);
            bind_events(sqlx::query(&sql), &changes)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("appending events", e))?;
            if let TotpChange::Put(totp) = &changes.totp {
                let sql = format!(
                    "INSERT INTO totp ({TOTP_COLUMNS}) VALUES {}",
                    placeholders(1, 8)
                );
                bind_totp(sqlx::query(&sql), &user.user_id, totp)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("storing the TOTP", e))?;
            }
            tx.commit().await.map_err(|e| classify("committing", e))?;
            Ok(())
        })
        .await?;
        self.cache.put(state_after(&changes, None, 0));
        committed(changes)
    }

    /// Reads from the database (never from the cache), and remembers what it read.
    async fn load_now(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        let snapshot = match &self.grouped {
            Some(grouped) => grouped.reads.read(user_id).await?,
            None => {
                self.with_connection(async |conn| read_snapshot(conn, user_id).await)
                    .await?
            }
        };
        if let Some(snapshot) = &snapshot {
            self.cache.put(snapshot.clone());
        }
        Ok(snapshot)
    }

    async fn update_now(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        let decide: SharedDecide = Arc::from(decide);
        // First on the cached state, if any: a write decided on it is conditional like any other,
        // and a refusal decided on it is not trusted (see `SnapshotCache`).
        let mut cached = self.cache.get(user_id);
        // Bounded by the caller's request timeout; each lost race means another writer succeeded.
        for attempt in 0u32.. {
            let from_cache = cached.is_some();
            let (decision, written) = match (cached.take(), &self.grouped) {
                // Postgres, a user not at hand: the writer reads, decides and writes in one cycle.
                (None, Some(grouped)) => {
                    let Decided { read, outcome } = grouped
                        .writes
                        .read_decide_write(user_id, decide.clone())
                        .await?;
                    if let Some(read) = read {
                        self.cache.put(read);
                    }
                    outcome?
                }
                (snapshot, _) => {
                    let snapshot = match snapshot {
                        Some(snapshot) => Some(snapshot),
                        None => self.load_now(user_id).await?,
                    };
                    let decision = match decide_on(user_id, snapshot, &decide) {
                        Ok(decision) => decision,
                        Err(_) if from_cache => continue,
                        Err(refusal) => return Err(refusal),
                    };
                    let written = self.write_decision(&decision).await?;
                    (decision, written)
                }
            };
            if written {
                let after = state_after(
                    &decision.changes,
                    decision.totp_before,
                    decision.expected_version + 1,
                );
                self.cache.put(after);
                return committed(Arc::unwrap_or_clone(decision.changes));
            }
            // A stale cache entry is no contention: read again at once.
            if !from_cache {
                back_off(attempt).await;
            }
        }
        unreachable!("the retry loop only ends by returning")
    }

    /// Writes a decision if its user is still at the version it was decided on; `false` if not.
    async fn write_decision(&self, decision: &Decision) -> Result<bool, Error> {
        match &self.grouped {
            Some(grouped) => {
                grouped
                    .writes
                    .write(&decision.changes, decision.expected_version)
                    .await
            }
            None => {
                self.with_connection(async |conn| {
                    self.write_sqlite(conn, decision.changes.clone(), decision.expected_version)
                        .await
                })
                .await
            }
        }
    }

    async fn totp_sealed_with_other_key_now(
        &self,
        key_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let rows = self
            .with_connection(async |conn| {
                sqlx::query(
                    "SELECT user_id FROM totp WHERE key_id <> $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
                )
                .bind(key_id.to_owned())
                .bind(after.to_owned())
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await
                .map_err(|e| classify("listing secrets to re-seal", e))
            })
            .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("user_id"))
            .collect::<Result<_, _>>()
            .map_err(|e| classify("reading user ids", e))
    }

    async fn ping_now(&self) -> Result<(), Error> {
        self.with_connection(async |conn| {
            sqlx::query("SELECT 1")
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(|e| classify("pinging the database", e))
        })
        .await
    }

    /// Runs `work` in a task of its own, which goes on to its end when the caller stops waiting:
    /// a driver interrupted between sending a statement and reading its answer can leave a
    /// connection inside a transaction, holding locks (SQLite's write lock blocks every writer),
    /// and a SQLite command leading a group commit writes for the others too.
    async fn to_the_end<T, Work>(&self, work: impl FnOnce(SqlStore) -> Work) -> Result<T, Error>
    where
        T: Send + 'static,
        Work: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Rejected(error::OVERLOADED))?;
        let work = work(self.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            work.await
        })
        .await
        .map_err(|failed| Error::Internal(format!("storage task failed: {failed}")))?
    }
}

/// On Postgres, a command's read and write are requests queued to the group reader and writer
/// tasks, which finish them whether or not the command still waits: `load` and `update` need no
/// task of their own there (one task switch less per request). Everything else, and everything
/// on SQLite, runs in one (see [`SqlStore::to_the_end`]).
#[async_trait]
impl Store for SqlStore {
    async fn insert_user(&self, changes: Changes) -> Result<Committed, Error> {
        self.to_the_end(async move |store| store.insert_user_now(changes).await)
            .await
    }

    async fn load(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        if self.grouped.is_some() {
            return self.load_now(user_id).await;
        }
        let user_id = user_id.to_owned();
        self.to_the_end(async move |store| store.load_now(&user_id).await)
            .await
    }

    async fn update(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        if self.grouped.is_some() {
            return self.update_now(user_id, decide).await;
        }
        let user_id = user_id.to_owned();
        self.to_the_end(async move |store| store.update_now(&user_id, decide).await)
            .await
    }

    async fn totp_sealed_with_other_key(
        &self,
        key_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let (key_id, after) = (key_id.to_owned(), after.to_owned());
        self.to_the_end(async move |store| {
            store
                .totp_sealed_with_other_key_now(&key_id, &after, limit)
                .await
        })
        .await
    }

    async fn close(&self) {
        self.connections.close().await;
    }

    fn connection_stats(&self) -> ConnectionStats {
        let (in_use, idle) = self.connections.stats();
        ConnectionStats { in_use, idle }
    }

    async fn ping(&self) -> Result<(), Error> {
        self.to_the_end(async move |store| store.ping_now().await)
            .await
    }
}
