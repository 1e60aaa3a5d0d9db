//! Checkpoints beside the writer: a thread of its own copies the WAL's pages back into the
//! database file while the writer goes on writing.
//!
//! Left to itself, SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: the
//! writer's thread copies them back and syncs the file before that commit returns, so the
//! commands of that group, and every group queued behind it, wait for the copy. Here a PASSIVE
//! checkpoint (it never holds up the writer) runs on another thread, at most every [`GATHER`]
//! after a commit: the writer keeps its thread for commits, the copy runs on the other core, and
//! a page written many times within one interval (the events' last page, the B-trees' upper
//! pages) is copied back once.
//!
//! SQLite starts the WAL afresh only when a checkpoint has copied all of it before the next
//! write begins, which a checkpoint beside a busy writer seldom does. So once the WAL has grown
//! past [`RESTART_AT`] pages, the writer itself, between two transactions, runs a RESTART
//! checkpoint: it copies the few pages committed since the thread's last checkpoint, and the
//! next transaction starts the WAL again. It waits for the WAL's readers at most
//! [`RESTART_PATIENCE`] (every write waits with it), and tries again later when one is slower. (Run from this thread, the RESTART would hold the lock
//! the writer waits for, and the writer would wait in SQLite's busy handler, which sleeps in
//! steps of milliseconds.) The writer keeps SQLite's own checkpoint, at
//! [`WRITER_CHECKPOINT_PAGES`] instead of 1,000, as a bound should this thread fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How long commits gather before a checkpoint copies them back (50 ms held up the writer's
/// syncs more often for less; docs/performance.md).
const GATHER: Duration = Duration::from_millis(200);

/// WAL pages past which the writer has the WAL start afresh (32 MiB of 4 KiB pages).
const RESTART_AT: i64 = 8_192;

/// How long the writer's RESTART checkpoint waits for readers (see [`restart`]).
const RESTART_PATIENCE: Duration = Duration::from_millis(20);

/// WAL pages at which the writer's own commit checkpoints (SQLite's `wal_autocheckpoint`): a
/// bound on the WAL (64 MiB) should the checkpoint thread fail, not reached while it works.
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// The writer's handle on the checkpoint thread; dropping it stops the thread and waits for it.
pub(super) struct Checkpointer {
    commits: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Set by the thread when the WAL has grown past [`RESTART_AT`] pages.
    restart_due: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts the thread on the SQLite file at `path`.
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let (commits, heard) = mpsc::sync_channel(1);
        let path = path.to_owned();
        let restart_due = Arc::new(AtomicBool::new(false));
        let due = restart_due.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_until_closed(path, heard, &due))?;
        Ok(Checkpointer {
            commits: Some(commits),
            thread: Some(thread),
            restart_due,
        })
    }

    /// Called by the writer after each transaction, on its connection `conn`: tells the thread
    /// (never waiting: when a commit is already pending, the next checkpoint covers this one
    /// too), and when the WAL is due to start afresh, copies back what the thread has not yet,
    /// so that the writer's next transaction starts the WAL again.
    pub fn committed(&self, conn: &Connection) {
        if let Some(commits) = &self.commits {
            let _ = commits.try_send(());
        }
        if self.restart_due.swap(false, Ordering::Relaxed)
            && let Err(error) = restart(conn)
        {
            tracing::warn!(%error, "checkpointing the SQLite WAL to start it afresh");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.commits.take();
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The thread: waits for a commit, lets others gather, checkpoints; until the writer drops its
/// handle.
fn checkpoint_until_closed(path: PathBuf, commits: Receiver<()>, restart_due: &AtomicBool) {
    let mut connection: Option<Connection> = None;
    while commits.recv().is_ok() && gather(&commits) {
        let conn = match &mut connection {
            Some(conn) => conn,
            empty => match Connection::open(&path) {
                Ok(conn) => empty.insert(conn),
                Err(error) => {
                    tracing::warn!(%error, "opening the SQLite file to checkpoint");
                    continue;
                }
            },
        };
        match checkpoint(conn) {
            Ok(wal_pages) => restart_due.store(wal_pages >= RESTART_AT, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(%error, "checkpointing the SQLite WAL");
                connection = None;
            }
        }
    }
}

/// The RESTART checkpoint on the writer's connection. It waits for the readers of the WAL to
/// finish, and every write waits with it, so it waits [`RESTART_PATIENCE`] at most instead of the
/// connection's busy timeout: should a reader take longer, the WAL is not restarted this time,
/// and the thread asks again after its next checkpoint.
fn restart(conn: &Connection) -> rusqlite::Result<()> {
    let busy_timeout: u64 = conn.pragma_query_value(None, "busy_timeout", |row| row.get(0))?;
    conn.busy_timeout(RESTART_PATIENCE)?;
    let restarted = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
    conn.busy_timeout(Duration::from_millis(busy_timeout))?;
    restarted
}

/// Lets commits gather for [`GATHER`]; answers false as soon as the writer has dropped its
/// handle (which wakes the thread), so that closing the store does not wait out the interval.
fn gather(commits: &Receiver<()>) -> bool {
    let deadline = Instant::now() + GATHER;
    loop {
        if let Err(TryRecvError::Disconnected) = commits.try_recv() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Copies the WAL back without holding up the writer (PASSIVE copies what no reader still
/// needs and waits for no lock; what it leaves, the next checkpoint takes); answers how many
/// pages the WAL holds.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages in the WAL (since it last started afresh), as a PASSIVE checkpoint reports them.
    fn wal_pages(conn: &Connection) -> i64 {
        checkpoint(conn).unwrap()
    }

    /// When the thread has found the WAL due to start afresh, the writer's next call copies the
    /// rest back, and its next transaction writes the WAL from the start.
    #[test]
    fn a_due_restart_starts_the_wal_afresh_at_the_next_transaction() {
        let folder = tempfile::tempdir().unwrap();
        let conn = Connection::open(folder.path().join("wal.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (n);",
        )
        .unwrap();
        for n in 0..20 {
            conn.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
        }
        // No thread: the test stands in for it and sets the flag itself.
        let checkpointer = Checkpointer {
            commits: None,
            thread: None,
            restart_due: Arc::new(AtomicBool::new(true)),
        };
        checkpointer.committed(&conn);
        assert!(!checkpointer.restart_due.load(Ordering::Relaxed));
        conn.execute("INSERT INTO t VALUES (20)", []).unwrap();
        // (Checkpoints here, so only once the WAL is as the test left it.)
        assert_eq!(
            wal_pages(&conn),
            1,
            "the WAL started afresh with the one commit, instead of holding 22"
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 21);
    }

    /// A reader in the middle of the WAL holds a due restart off for [`RESTART_PATIENCE`], not
    /// for the writer's busy timeout: the writes go on, the WAL is restarted on a later turn.
    #[test]
    fn a_due_restart_waits_for_a_slow_reader_only_briefly() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("wal.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA busy_timeout = 10000; CREATE TABLE t (n); INSERT INTO t VALUES (0);",
        )
        .unwrap();
        let reader = Connection::open(&path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let checkpointer = Checkpointer {
            commits: None,
            thread: None,
            restart_due: Arc::new(AtomicBool::new(true)),
        };
        let started = Instant::now();
        checkpointer.committed(&conn);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(2),
            "the restart waited {waited:?} for the reader"
        );
        let busy_timeout: u64 = conn
            .pragma_query_value(None, "busy_timeout", |row| row.get(0))
            .unwrap();
        assert_eq!(busy_timeout, 10_000, "the writer's busy timeout is back");
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        reader.execute_batch("COMMIT").unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 3);
    }
}
