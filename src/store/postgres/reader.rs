//! Group reads: the snapshot reads of concurrent queries travel together.
//!
//! Queries (GetUser, ListAuthenticationMethods) read a user; commands that change one have the
//! group-commit writer read it ([`super::writer`], with [`read_isolating_failures`]). Sent one by one, each read wakes a Postgres
//! backend and costs a round trip of its own; on a busy machine those wake-ups, not the index
//! lookups, are most of the database's work. Here the reads that queue up while a statement is in
//! flight go out as the next statement, `… WHERE user_id = ANY($1)`, and each gets its row. A
//! read sees one committed state of its user (one statement).
//!
//! A few reader tasks share the queue, each with its own connection (native sqlx Postgres, for
//! the array parameter): while one statement is in flight, the next reader gathers the next
//! batch. A failed statement fails its batch, and its connection is replaced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::session::reconnect;
use crate::domain::error::{Error, OVERLOADED};
use crate::domain::store::Snapshot;
use crate::store::classify;
use crate::store::rows::{select_snapshot, snapshot_from_row};
use crate::telemetry::{self, Family, Kind};

/// The snapshots of the users in the text array `$1`.
const SELECT_SNAPSHOTS: &str = select_snapshot!("u.user_id = ANY($1)");

/// Most reads per statement.
const MAX_BATCH: usize = 64;

/// Reader tasks (and connections) per instance.
const READERS: usize = 2;

/// Histogram of reads per statement.
pub const READ_BATCH_SIZE: &str = "totp_db_read_batch_size";

/// One command's read, waiting in the queue.
struct Read {
    user_id: String,
    done: oneshot::Sender<Result<Option<Snapshot>, Error>>,
}

/// The queue in front of the reader tasks.
#[derive(Clone, Debug)]
pub struct GroupRead {
    queue: mpsc::Sender<Read>,
}

impl GroupRead {
    /// Starts the reader tasks on `url`, their statements bounded by `timeout`; they stop when
    /// every handle is dropped.
    pub fn start(url: &str, timeout: Duration, capacity: usize) -> Self {
        telemetry::describe(Family {
            name: READ_BATCH_SIZE,
            kind: Kind::Histogram,
            help: "Postgres: user reads per grouped statement",
        });
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..READERS {
            tokio::spawn(reader(url.to_owned(), timeout, receiver.clone()));
        }
        GroupRead { queue }
    }

    /// The user `user_id` and its TOTP, or `None` when there is no such user.
    pub async fn read(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        let (done, answer) = oneshot::channel();
        let read = Read {
            user_id: user_id.to_owned(),
            done,
        };
        // A full queue is refused at once (see `GroupCommit`).
        self.queue.try_send(read).map_err(|refused| match refused {
            mpsc::error::TrySendError::Full(_) => Error::Rejected(OVERLOADED),
            mpsc::error::TrySendError::Closed(_) => {
                Error::Unavailable("the database readers have stopped".into())
            }
        })?;
        answer
            .await
            .map_err(|_| Error::Internal("a database reader dropped a read".into()))?
    }
}

/// Takes batches from the shared queue and reads each in one statement, until the queue closes.
/// The queue's lock is held while waiting for the first read of a batch and released before the
/// statement, so the other readers gather the next batches meanwhile.
async fn reader(url: String, timeout: Duration, queue: Arc<Mutex<mpsc::Receiver<Read>>>) {
    let mut connection: Option<PgConnection> = None;
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let mut batch = Vec::new();
            while batch.is_empty() {
                let Some(first) = queue.recv().await else {
                    return;
                };
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(read) => batch.push(read),
                        Err(_) => break,
                    }
                }
                // Reads whose requests have timed out are not made.
                batch.retain(|read| !read.done.is_closed());
            }
            batch
        };
        let ids: Vec<&str> = batch.iter().map(|read| read.user_id.as_str()).collect();
        let snapshots = read_isolating_failures(&mut connection, &url, timeout, &ids).await;
        for (read, snapshot) in batch.into_iter().zip(snapshots) {
            let _ = read.done.send(snapshot);
        }
    }
}

/// Reads the users `ids` in one statement; each one's snapshot (`None`: no such user). When the
/// statement fails for a reason other than the database being away, one id may be at fault:
/// each is then read alone, so that only the faulty one fails. A failure drops the connection.
pub(super) async fn read_isolating_failures(
    connection: &mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
    ids: &[&str],
) -> Vec<Result<Option<Snapshot>, Error>> {
    match read_on(connection, url, timeout, ids.to_vec()).await {
        // A user asked for twice gets the same row twice.
        Ok(snapshots) => ids
            .iter()
            .map(|id| Ok(snapshots.get(*id).cloned()))
            .collect(),
        Err(error) if ids.len() == 1 || matches!(error, Error::Unavailable(_)) => {
            vec![Err(error); ids.len()]
        }
        Err(_) => {
            let mut reads = Vec::with_capacity(ids.len());
            for id in ids {
                let alone = read_on(connection, url, timeout, vec![id]).await;
                reads.push(alone.map(|mut snapshots| snapshots.remove(*id)));
            }
            reads
        }
    }
}

/// [`read_users`] on the open connection or a new one; a failure drops the connection.
async fn read_on(
    connection: &mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
    ids: Vec<&str>,
) -> Result<HashMap<String, Snapshot>, Error> {
    let read = async {
        let open = reconnect(connection, url, timeout).await?;
        read_users(open, ids).await
    }
    .await;
    if read.is_err() {
        *connection = None;
    }
    read
}

/// Reads the users `ids` in one statement, by user id.
async fn read_users(
    connection: &mut PgConnection,
    ids: Vec<&str>,
) -> Result<HashMap<String, Snapshot>, Error> {
    metrics::histogram!(READ_BATCH_SIZE).record(ids.len() as f64);
    let rows: Vec<PgRow> = sqlx::query(SELECT_SNAPSHOTS)
        .bind(ids)
        .fetch_all(connection)
        .await
        .map_err(|e| classify("loading users", e))?;
    rows.iter()
        .map(|row| snapshot_from_row(row).map(|s| (s.user.user_id.clone(), s)))
        .collect::<Result<_, _>>()
        .map_err(|e| classify("reading a user row", e))
}
