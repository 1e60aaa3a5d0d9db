//! The SQLite writer: one thread of its own, owning the one connection that every write of this
//! process goes through, which writes whatever has queued up meanwhile in one `BEGIN IMMEDIATE`
//! transaction (one commit and one sync for the lot).
//!
//! The thread talks to SQLite through rusqlite, in place: a write's statements (the user's
//! conditional update, then its events and TOTP change only if the update happened) are plain
//! function calls. Through sqlx each statement was a round trip to the connection's own thread,
//! and those hand-offs cost more than SQLite's work (docs/performance.md). Both libraries link the
//! same SQLite (`libsqlite3-sys`, bundled); sqlx keeps the readers, the migrations and the rest.
//!
//! A command on a user not at hand (no cached state, or a refusal to be decided again on a fresh
//! read) hands over its decision instead: the thread reads the user in its transaction, lets the
//! domain decide there (microseconds; a decision that panics fails its command only) and writes
//! the outcome, sparing the command a read of its own on a pool connection, two more hand-offs.
//!
//! A request hands its write over a channel and waits for the answer: the thread wakes once per
//! group, not once per statement. A write that fails (a value the database refuses) fails its
//! group, which is then written again one write per transaction, so that only the faulty one
//! fails; after a database failure the connection is closed and the next group opens another.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::checkpoint::{Checkpointer, WRITER_CHECKPOINT_PAGES};
use super::{CONNECTION_SETUP, SELECT_SNAPSHOT};
use crate::domain::error::Error;
use crate::domain::store::Snapshot;
use crate::store::is_transient;
use crate::store::optimistic::{
    Decided, DecidingWriter, Decision, SharedDecide, decide_on_guarded,
};
use crate::store::rows::{
    EVENT_COLUMNS, INSERT_USER, NewUserRow, RowValues, SnapshotRow, TOTP_COLUMNS, TOTP_ON_CONFLICT,
    TotpRow, snapshot_from_row,
};

/// The writer's page cache, in KiB: every write of the process reads its user's pages through
/// it (a reader's is 1 MiB; 8 MiB spared page reads for a few MiB of memory, docs/performance.md).
const WRITER_CACHE_KIB: u32 = 8_192;

/// Most writes in one transaction: a bound on how long one commit keeps the others waiting.
const MOST_WRITES_PER_GROUP: usize = 256;

const UPDATE_USER: &str = "UPDATE users SET state = ?1, sequence = ?2, change_date = ?3, \
     failed_attempts = ?4, locked_until = ?5, recovery_codes = ?6, version = version + 1 \
     WHERE user_id = ?7 AND version = ?8";

static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
});

static PUT_TOTP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO totp ({TOTP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         {TOTP_ON_CONFLICT}"
    )
});

/// The writer thread's end of the channel, and the thread.
pub(super) struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Work waiting for the writer, and where its answer goes.
struct Job {
    work: Work,
    done: oneshot::Sender<Result<Outcome, Error>>,
}

// Not boxed: work and outcome are each moved once, through a channel, and a box would cost an
// allocation per command for nothing.
#[allow(clippy::large_enum_variant)]
enum Work {
    /// Rows a command decided on itself.
    Write(Write),
    /// A command on a user not at hand: the writer reads the user, lets the domain decide and
    /// writes the decision, in its transaction (no read of its own before, and the version
    /// cannot move between the read and the write).
    ReadDecideWrite {
        user_id: String,
        decide: SharedDecide,
    },
}

/// What the writer did.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    /// Whether a [`Write`] happened (an update does not when the user's row is no longer at the
    /// version it expects, an insert when the id is taken).
    Written(bool),
    /// What it read, decided and wrote for a [`Work::ReadDecideWrite`].
    Decided(Decided),
}

/// The rows one command writes.
pub(super) enum Write {
    /// A decision's rows, on the condition that the user is still at `expected_version`.
    Update {
        rows: RowValues,
        expected_version: u64,
    },
    /// A new user with its first events and TOTP.
    Insert {
        user: Box<NewUserRow>,
        rows: RowValues,
    },
}

impl Writer {
    /// Starts the thread for the SQLite file at `path` (which must exist: the pool created it).
    pub fn start(path: PathBuf) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_until_closed(&path, queue))?;
        Ok(Writer {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Writes `write` together with whatever else is waiting; answers whether it happened.
    pub async fn write(&self, write: Write) -> Result<bool, Error> {
        match self.run(Work::Write(write)).await? {
            Outcome::Written(written) => Ok(written),
            Outcome::Decided(_) => {
                Err(Error::Internal("a write was answered as a decision".into()))
            }
        }
    }

    /// Reads `user_id`, lets `decide` decide on it and writes the decision, together with
    /// whatever else is waiting.
    pub async fn read_decide_write(
        &self,
        user_id: &str,
        decide: SharedDecide,
    ) -> Result<Decided, Error> {
        let work = Work::ReadDecideWrite {
            user_id: user_id.to_owned(),
            decide,
        };
        match self.run(work).await? {
            Outcome::Decided(decided) => Ok(decided),
            Outcome::Written(_) => {
                Err(Error::Internal("a decision was answered as a write".into()))
            }
        }
    }

    async fn run(&self, work: Work) -> Result<Outcome, Error> {
        let (done, answer) = oneshot::channel();
        let sent = match &*self.jobs.lock().expect("writer channel lock") {
            Some(jobs) => jobs.send(Job { work, done }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(Error::Unavailable("the store is closed".into()));
        }
        answer
            .await
            .map_err(|_| Error::Internal("the SQLite writer stopped".into()))?
    }

    /// Lets the thread write what is queued, then waits for it to stop.
    pub async fn close(&self) {
        self.jobs.lock().expect("writer channel lock").take();
        let thread = self.thread.lock().expect("writer thread lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl DecidingWriter for Writer {
    fn read_decide_write(
        &self,
        user_id: &str,
        decide: SharedDecide,
    ) -> impl Future<Output = Result<Decided, Error>> + Send {
        Writer::read_decide_write(self, user_id, decide)
    }

    fn write_decision(
        &self,
        decision: &Decision,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        self.write(Write::Update {
            rows: RowValues::of(&decision.changes),
            expected_version: decision.expected_version,
        })
    }
}

/// The thread: takes the next job and every job queued behind it, writes them, answers them;
/// until the channel closes and the queue is empty.
fn write_until_closed(path: &Path, queue: mpsc::Receiver<Job>) {
    let mut connection: Option<Connection> = None;
    let checkpointer = Checkpointer::start(path)
        .inspect_err(|error| {
            tracing::warn!(%error, "starting the checkpoint thread; the writer checkpoints alone")
        })
        .ok();
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter().take(MOST_WRITES_PER_GROUP - 1));
        let conn = match &mut connection {
            Some(conn) => conn,
            empty => match open(path) {
                Ok(conn) => empty.insert(conn),
                Err(error) => {
                    answer_all(group, &error);
                    continue;
                }
            },
        };
        let written = write_and_answer(conn, group);
        if let Some(checkpointer) = &checkpointer {
            checkpointer.committed(conn);
        }
        if let Err(error) = written
            && error.is_server_fault()
        {
            connection = None;
        }
    }
}

/// Writes `group` in one transaction, or each job alone when that fails (see the module's
/// summary), and answers every job; answers the last failure.
fn write_and_answer(conn: &mut Connection, group: Vec<Job>) -> Result<(), Error> {
    match write_group(conn, &group) {
        Ok(outcomes) => {
            for (job, outcome) in group.into_iter().zip(outcomes) {
                let _ = job.done.send(Ok(outcome));
            }
            Ok(())
        }
        Err(error) if group.len() > 1 && !matches!(error, Error::Unavailable(_)) => {
            let mut last = Ok(());
            for job in group {
                let alone = write_group(conn, std::slice::from_ref(&job));
                if let Err(error) = &alone {
                    last = Err(error.clone());
                }
                let outcome = alone.and_then(|outcomes| {
                    outcomes.into_iter().next().ok_or_else(|| {
                        Error::Internal("a write alone came back without its outcome".into())
                    })
                });
                let _ = job.done.send(outcome);
            }
            last
        }
        Err(error) => {
            answer_all(group, &error);
            Err(error)
        }
    }
}

fn answer_all(group: Vec<Job>, error: &Error) {
    for job in group {
        let _ = job.done.send(Err(error.clone()));
    }
}

/// Opens the file with the pool's settings, then the writer's own: its checkpoints are mostly
/// left to the checkpoint thread (see [`super::checkpoint`]), and its page cache is larger than a
/// reader's, since every write of the process goes through it.
fn open(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(|e| classify("opening the SQLite file", e))?;
    conn.execute_batch(&CONNECTION_SETUP.join(";\n"))
        .map_err(|e| classify("setting up the SQLite writer", e))?;
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}; PRAGMA cache_size = -{WRITER_CACHE_KIB}"
    ))
    .map_err(|e| classify("setting up the SQLite writer", e))?;
    Ok(conn)
}

/// Writes every job of `group` in one `BEGIN IMMEDIATE` transaction (the write lock is taken at
/// once, so the version checks and the writes after them cannot interleave with another
/// process's writer); answers whether each happened. A failed statement rolls back the lot.
fn write_group(conn: &mut Connection, group: &[Job]) -> Result<Vec<Outcome>, Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify("beginning a transaction", e))?;
    let written = group
        .iter()
        .map(|job| match &job.work {
            Work::Write(write) => write_one(&tx, write).map(Outcome::Written),
            Work::ReadDecideWrite { user_id, decide } => {
                read_decide_write(&tx, user_id, decide).map(Outcome::Decided)
            }
        })
        .collect::<Result<Vec<_>, Error>>()?;
    tx.commit().map_err(|e| classify("committing", e))?;
    Ok(written)
}

/// Writes the user's row (an update if the row is still at the version expected, an insert
/// unless the id is taken) and, only if that happened, the events and the TOTP change.
fn write_one(conn: &Connection, write: &Write) -> Result<bool, Error> {
    let (user_row_written, rows) = match write {
        Write::Update {
            rows,
            expected_version,
        } => (update_user(conn, rows, *expected_version)?, rows),
        Write::Insert { user, rows } => (insert_user(conn, user)?, rows),
    };
    if !user_row_written {
        return Ok(false);
    }
    append_events(conn, rows)?;
    change_totp(conn, rows)?;
    Ok(true)
}

/// Reads the user, lets the domain decide and writes the decision (see [`Work::ReadDecideWrite`]).
fn read_decide_write(
    conn: &Connection,
    user_id: &str,
    decide: &SharedDecide,
) -> Result<Decided, Error> {
    let read = read_snapshot(conn, user_id)?;
    let decision = match decide_on_guarded(user_id, read.clone(), decide) {
        Ok(decision) => decision,
        Err(refusal) => {
            return Ok(Decided {
                read,
                outcome: Err(refusal),
            });
        }
    };
    let write = Write::Update {
        rows: RowValues::of(&decision.changes),
        expected_version: decision.expected_version,
    };
    let written = write_one(conn, &write)?;
    Ok(Decided {
        read,
        outcome: Ok((decision, written)),
    })
}

fn read_snapshot(conn: &Connection, user_id: &str) -> Result<Option<Snapshot>, Error> {
    let mut statement = conn
        .prepare_cached(SELECT_SNAPSHOT)
        .map_err(|e| classify("loading a user", e))?;
    let mut rows = statement
        .query(params![user_id])
        .map_err(|e| classify("loading a user", e))?;
    let row = rows.next().map_err(|e| classify("loading a user", e))?;
    row.map(snapshot_from_row)
        .transpose()
        .map_err(|e| classify("reading a user row", e))
}

impl SnapshotRow for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, column: &str) -> rusqlite::Result<Option<String>> {
        self.get(column)
    }
    fn int(&self, column: &str) -> rusqlite::Result<Option<i64>> {
        self.get(column)
    }
    fn blob(&self, column: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.get(column)
    }
    fn unreadable(what: &str) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored {what} does not parse").into(),
        )
    }
}

fn update_user(conn: &Connection, rows: &RowValues, expected_version: u64) -> Result<bool, Error> {
    let user = &rows.user;
    conn.prepare_cached(UPDATE_USER)
        .and_then(|mut statement| {
            statement.execute(params![
                user.state,
                user.sequence,
                user.change_date,
                user.failed_attempts,
                user.locked_until,
                user.recovery_codes,
                user.user_id,
                expected_version as i64,
            ])
        })
        .map(|updated| updated == 1)
        .map_err(|e| classify("updating a user", e))
}

fn insert_user(conn: &Connection, user: &NewUserRow) -> Result<bool, Error> {
    conn.prepare_cached(INSERT_USER)
        .and_then(|mut statement| {
            statement.execute(params![
                user.user_id,
                user.resource_owner,
                user.username,
                user.email,
                user.email_verified,
                user.profile,
                user.state,
                user.sequence,
                user.created_at,
                user.change_date,
                user.failed_attempts,
                user.locked_until,
                user.recovery_codes,
            ])
        })
        .map(|inserted| inserted == 1)
        .map_err(|e| classify("inserting a user", e))
}

fn append_events(conn: &Connection, rows: &RowValues) -> Result<(), Error> {
    if rows.events.is_empty() {
        return Ok(());
    }
    let mut statement = conn
        .prepare_cached(&INSERT_EVENT)
        .map_err(|e| classify("appending events", e))?;
    for event in &rows.events {
        statement
            .execute(params![
                rows.user.user_id,
                event.sequence,
                event.event_type,
                event.payload,
                event.resource_owner,
                event.creator,
                event.created_at,
                rows.command_id,
            ])
            .map_err(|e| classify("appending events", e))?;
    }
    Ok(())
}

fn change_totp(conn: &Connection, rows: &RowValues) -> Result<(), Error> {
    let user_id = &rows.user.user_id;
    match &rows.totp {
        TotpRow::Keep => Ok(()),
        TotpRow::Put(put) => conn
            .prepare_cached(&PUT_TOTP)
            .and_then(|mut statement| {
                statement.execute(params![
                    user_id,
                    put.state,
                    put.key_id,
                    put.secret_sealed,
                    put.digits,
                    put.period,
                    put.algorithm,
                    put.last_used_step,
                    put.created_at,
                ])
            })
            .map(|_| ())
            .map_err(|e| classify("storing the TOTP", e)),
        TotpRow::Delete => conn
            .prepare_cached("DELETE FROM totp WHERE user_id = ?1")
            .and_then(|mut statement| statement.execute(params![user_id]))
            .map(|_| ())
            .map_err(|e| classify("removing the TOTP", e)),
    }
}

/// Sorts a SQLite failure as the sqlx side does ([`crate::store::classify`]): busy and locked
/// (the file's write lock held elsewhere past the busy timeout) and a file that cannot be opened
/// are "unreachable, try again" (14); the rest is unexpected (13).
fn classify(context: &str, err: rusqlite::Error) -> Error {
    let try_again = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => {
            failure.code == ErrorCode::CannotOpen
                || is_transient(&failure.extended_code.to_string())
        }
        _ => false,
    };
    if try_again {
        Error::Unavailable(format!("{context}: {err}"))
    } else {
        Error::Internal(format!("{context}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::StoreOptions;
    use crate::store::rows::{EventRow, UserRow};

    /// A file with the service's schema and `users` at version 0, none with events.
    async fn database_with(users: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("totp.db");
        sqlx::any::install_default_drivers();
        let store = super::super::SqliteStore::open(&StoreOptions {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            max_connections: Some(1),
            acquire_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            cache_capacity: 0,
            queue_capacity: 8,
        })
        .await
        .unwrap();
        crate::domain::store::Store::close(&store).await;
        let conn = Connection::open(&path).unwrap();
        for user in users {
            conn.execute(
                "INSERT INTO users (user_id, resource_owner, username, email, email_verified, \
                 profile, state, sequence, created_at, change_date, version) \
                 VALUES (?1, 'org', ?1, ?1, 0, \
                 '{\"given_name\":\"A\",\"family_name\":\"B\"}', 'active', 0, 0, 0, 0)",
                params![user],
            )
            .unwrap();
        }
        (folder, path)
    }

    /// A change of `user`'s row from `expected_version` with one event.
    fn one_event(user: &str, expected_version: u64) -> Write {
        Write::Update {
            rows: RowValues {
                command_id: format!("command-{user}"),
                user: UserRow {
                    user_id: user.to_owned(),
                    state: "active",
                    sequence: 1,
                    change_date: 1,
                    failed_attempts: 0,
                    locked_until: None,
                    recovery_codes: String::new(),
                },
                events: vec![EventRow {
                    sequence: 1,
                    event_type: "user.human.mfa.otp.check.succeeded",
                    payload: "{}".into(),
                    resource_owner: "org".into(),
                    creator: "test".into(),
                    created_at: 1,
                }],
                totp: TotpRow::Keep,
            },
            expected_version,
        }
    }

    fn version_and_events(path: &Path, user: &str) -> (i64, i64) {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            "SELECT version, (SELECT count(*) FROM events WHERE user_id = ?1) FROM users \
             WHERE user_id = ?1",
            params![user],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    }

    /// A commit reaches the database file itself, not only the WAL, without the writer
    /// checkpointing: the checkpoint thread copies it back (the writer's own checkpoint waits for
    /// far more pages than one write).
    #[tokio::test]
    async fn the_checkpoint_thread_copies_commits_into_the_database_file() {
        let (folder, path) = database_with(&["a"]).await;
        let writer = Writer::start(path.clone()).unwrap();
        assert_eq!(writer.write(one_event("a", 0)).await, Ok(true));
        // A copy of the database file without its WAL shows what has been checkpointed. (A copy
        // taken while a checkpoint writes may be torn: that counts as not yet.)
        let copy = folder.path().join("copy.db");
        let checkpointed_version = || -> Option<i64> {
            std::fs::copy(&path, &copy).ok()?;
            let conn = Connection::open(&copy).ok()?;
            conn.query_row("SELECT version FROM users WHERE user_id = 'a'", [], |row| {
                row.get(0)
            })
            .ok()
        };
        let mut seen = None;
        for _ in 0..50 {
            seen = checkpointed_version();
            if seen == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, Some(1), "the write in the database file within 5 s");
        writer.close().await;
    }

    /// A decision that panics fails its own command; the writer serves the next one.
    #[tokio::test]
    async fn a_decision_that_panics_fails_alone() {
        let (_folder, path) = database_with(&["a"]).await;
        let writer = Writer::start(path.clone()).unwrap();
        let panics: SharedDecide = Arc::new(|_| panic!("a decision that panics"));
        let decided = writer.read_decide_write("a", panics).await.unwrap();
        assert!(decided.read.is_some_and(|read| read.user.version == 0));
        assert_eq!(
            decided.outcome.unwrap_err(),
            Error::Internal("a decision panicked".into())
        );
        assert_eq!(writer.write(one_event("a", 0)).await, Ok(true));
        assert_eq!(version_and_events(&path, "a"), (1, 1));
        writer.close().await;
    }

    /// Writes waiting together go in one transaction; one the database refuses fails alone and
    /// leaves nothing behind, the others land, and a write whose version moved on is answered
    /// "not written".
    #[tokio::test]
    async fn a_refused_write_fails_alone_and_the_rest_of_its_group_lands() {
        let users = ["first", "a", "b", "refused", "c"];
        let (_folder, path) = database_with(&users).await;
        let outside = Connection::open(&path).unwrap();
        outside
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.user_id = 'refused' \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        let writer = Arc::new(Writer::start(path.clone()).unwrap());
        // Another connection holds the write lock, so that the writer, busy with the first
        // write, lets the others queue up into one group behind it.
        outside.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(one_event("first", 0)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut group = vec![];
        for (user, version) in [("a", 0), ("b", 0), ("refused", 0), ("c", 0), ("a", 0)] {
            let writer = writer.clone();
            group.push(tokio::spawn(async move {
                writer.write(one_event(user, version)).await
            }));
            // In this order: the second write of "a" comes after the first.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outside.execute_batch("COMMIT").unwrap();
        assert_eq!(first.await.unwrap(), Ok(true));
        let mut answers = vec![];
        for write in group {
            answers.push(write.await.unwrap());
        }
        assert_eq!(answers[0], Ok(true), "a");
        assert_eq!(answers[1], Ok(true), "b");
        assert!(
            matches!(&answers[2], Err(Error::Internal(message)) if message.contains("refused by the test")),
            "{:?}",
            answers[2]
        );
        assert_eq!(answers[3], Ok(true), "c");
        assert_eq!(
            answers[4],
            Ok(false),
            "a again, from the version it had moved on from"
        );
        for user in ["first", "a", "b", "c"] {
            assert_eq!(version_and_events(&path, user), (1, 1), "{user}");
        }
        assert_eq!(version_and_events(&path, "refused"), (0, 0));
        writer.close().await;
        assert_eq!(
            writer.write(one_event("b", 1)).await,
            Err(Error::Unavailable("the store is closed".into()))
        );
    }
}
