//! Group commit: the conditional writes of concurrent commands travel together.
//!
//! Each command's write is still all-or-nothing and still conditional on the user's `version`,
//! but the writes that queue up while a statement is in flight go out as the next statement: one
//! round trip, one commit and one WAL flush for the lot, instead of one each. The statement takes
//! its rows as arrays (`UNNEST`), so its text is the same for every batch and stays prepared.
//!
//! The user update decides for each user whether its events and TOTP change are written (they
//! join on the users it returned), so a command whose version check failed leaves no trace and
//! is told so. A batch holds at most one write per user: a second write for a user waits for the
//! next batch, where its version check fails and its command reads and decides again.
//!
//! One writer, on a thread of its own with its own connection (native sqlx Postgres, for array
//! binds), takes the batches: while one statement is in flight the next batch gathers, which is
//! what makes the batches. Rows are locked in user id order, so batches of two service instances
//! on one database cannot deadlock. A statement that fails fails its batch, and the connection
//! is replaced.
//!
//! A command on a user the service has not seen lately (not in the user cache) comes to the
//! writer undecided ([`GroupCommit::read_decide_write`]): each cycle, the writer reads such users
//! in one statement, runs the domain's decisions on its own thread (a few microseconds each), and
//! writes them with the cycle's other writes, which costs such a command one queue and one round
//! trip instead of two of each (measurements in docs/performance.md).
//!
//! A write that would be alone in its cycle (the writer is idle) skips the writer's thread: a task
//! on the service's runtime writes it on a connection kept for lone writes
//! ([`GroupCommit::write`]), which spares a request at low load two thread wake-ups.
//!
//! A statement whose answer was lost with its connection may have been written or not; its
//! commands are settled apart ([`in_doubt`]) while the writer goes on.

mod in_doubt;
pub(super) use in_doubt::{PATIENCE as IN_DOUBT_PATIENCE, RETRY_PAUSE as IN_DOUBT_RETRY_PAUSE};

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgConnection;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};

use super::reader::read_isolating_failures;
use super::session::reconnect;
use crate::domain::error::{Error, OVERLOADED};
use crate::domain::store::{Changes, Snapshot};
use crate::store::classify;
use crate::store::optimistic::{
    Decided, DecidingWriter, Decision, SharedDecide, decide_on_guarded,
};
use crate::store::rows::{EventRow, PutTotp, RowValues, TotpRow};
use crate::telemetry::{self, Family, Kind};

/// Most writes per statement.
const MAX_BATCH: usize = 64;

/// SQLSTATE of a transaction Postgres aborted to break a deadlock.
const DEADLOCK_DETECTED: &str = "40P01";

/// Histogram of writes per statement.
pub const WRITE_BATCH_SIZE: &str = "totp_db_write_batch_size";

/// One command's conditional write, owned so that it can wait in the queue.
#[derive(Debug)]
struct Write {
    expected_version: i64,
    rows: RowValues,
    reply: Reply,
}

/// A command on a user not at hand: the writer reads the user, lets the domain decide and writes
/// the outcome, all in one cycle.
struct ReadDecideWrite {
    user_id: String,
    decide: SharedDecide,
    done: oneshot::Sender<Result<Decided, Error>>,
}

/// What waits in the writer's queue. (Not boxed: a job is moved once, into the channel's slot,
/// and a box would cost an allocation per write for nothing.)
#[allow(clippy::large_enum_variant)]
enum Job {
    Write(Write),
    ReadDecideWrite(ReadDecideWrite),
}

/// Where a write's outcome goes.
#[derive(Debug)]
enum Reply {
    /// A command that read and decided itself: whether its write happened.
    Written(oneshot::Sender<Result<bool, Error>>),
    /// A command the writer read and decided for (see [`GroupCommit::read_decide_write`]).
    Decided(Box<DecidedFor>),
}

/// A decision the writer made, waiting for its write.
#[derive(Debug)]
struct DecidedFor {
    done: oneshot::Sender<Result<Decided, Error>>,
    read: Option<Snapshot>,
    decision: Decision,
}

impl Job {
    /// Whether nobody waits for this job's answer any more.
    fn is_abandoned(&self) -> bool {
        match self {
            Job::ReadDecideWrite(command) => command.done.is_closed(),
            Job::Write(write) => write.reply.is_closed(),
        }
    }
}

impl Reply {
    /// Whether nobody waits for this answer any more.
    fn is_closed(&self) -> bool {
        match self {
            Reply::Written(done) => done.is_closed(),
            Reply::Decided(decided) => decided.done.is_closed(),
        }
    }

    fn send(self, written: Result<bool, Error>) {
        // A command that stopped waiting (its request timed out) dropped its receiver: nothing
        // to tell then.
        match self {
            Reply::Written(done) => {
                let _ = done.send(written);
            }
            Reply::Decided(decided) => {
                let DecidedFor {
                    done,
                    read,
                    decision,
                } = *decided;
                let _ = done.send(written.map(|written| Decided {
                    read,
                    outcome: Ok((decision, written)),
                }));
            }
        }
    }
}

impl Write {
    /// The row values of `changes`, to be written if the user is still at `expected_version`.
    fn new(changes: &Changes, expected_version: u64, reply: Reply) -> Write {
        Write {
            expected_version: expected_version as i64,
            rows: RowValues::of(changes),
            reply,
        }
    }

    fn user_id(&self) -> &str {
        &self.rows.user.user_id
    }
}

/// The queue in front of the writer task, and the connection of writes that go alone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
    lone: Arc<LoneWrites>,
}

/// The connection a write takes when the writer is idle (see [`GroupCommit::write`]).
#[derive(Debug)]
struct LoneWrites {
    url: String,
    timeout: Duration,
    connection: Arc<Mutex<Option<PgConnection>>>,
    /// Whether the writer has a cycle under way (set and cleared by the writer).
    writer_busy: Arc<AtomicBool>,
}

impl GroupCommit {
    /// Starts the writer on `url`, its statements bounded by `timeout`; it stops when every
    /// handle is dropped.
    ///
    /// The writer runs on a thread of its own. Every write waits for its cycle (gather, send,
    /// commit, answer), so the cycle must start again the moment the database answers; on the
    /// service's runtime the writer's wake-up would queue behind the request tasks ready at that
    /// moment. A thread is woken by the kernel directly. (The readers stay on the runtime: on
    /// threads of their own they were slower. Measurements in docs/performance.md.)
    pub fn start(url: &str, timeout: Duration, capacity: usize) -> std::io::Result<Self> {
        telemetry::describe(Family {
            name: WRITE_BATCH_SIZE,
            kind: Kind::Histogram,
            help: "Postgres: commands written per statement by group commit",
        });
        telemetry::describe(Family {
            name: in_doubt::IN_DOUBT_WRITES,
            kind: Kind::Counter,
            help: "Postgres: writes whose answer was lost with the connection, by how they were settled",
        });
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let lone = Arc::new(LoneWrites {
            url: url.to_owned(),
            timeout,
            connection: Arc::default(),
            writer_busy: Arc::default(),
        });
        let (url, busy) = (url.to_owned(), lone.writer_busy.clone());
        std::thread::Builder::new()
            .name("totp-db-writer".into())
            .spawn(move || runtime.block_on(writer(url, timeout, receiver, busy)))?;
        Ok(GroupCommit { queue, lone })
    }

    /// Writes `changes` if the user's row is still at `expected_version`; `false` if it was not.
    ///
    /// A write that would be alone in the writer's cycle (the writer is idle, and the connection
    /// for lone writes is free) is written by a task on the service's runtime instead: with
    /// nobody to group with, the way through the writer's thread only adds two thread wake-ups
    /// to the request's latency. Should the writer start a cycle meanwhile, the two statements
    /// run side by side; the version condition and the row locks keep them apart as they keep
    /// two instances apart. The task, not the request, owns the statement, so a request that
    /// times out leaves no statement half-read on the connection.
    pub async fn write(&self, changes: &Changes, expected_version: u64) -> Result<bool, Error> {
        let (done, outcome) = oneshot::channel();
        let write = Write::new(changes, expected_version, Reply::Written(done));
        let writer_idle = !self.lone.writer_busy.load(Ordering::Acquire)
            && self.queue.capacity() == self.queue.max_capacity();
        match self.lone.connection.clone().try_lock_owned() {
            Ok(connection) if writer_idle => {
                tokio::spawn(write_alone(self.lone.clone(), connection, write));
            }
            _ => self.send(Job::Write(write))?,
        }
        outcome.await.map_err(|_| dropped())?
    }

    /// Reads `user_id`, decides on it and writes the decision, in one cycle of the writer: a
    /// command on a user not at hand waits for one cycle instead of a read and then a cycle.
    pub(super) async fn read_decide_write(
        &self,
        user_id: &str,
        decide: SharedDecide,
    ) -> Result<Decided, Error> {
        let (done, outcome) = oneshot::channel();
        self.send(Job::ReadDecideWrite(ReadDecideWrite {
            user_id: user_id.to_owned(),
            decide,
            done,
        }))?;
        outcome.await.map_err(|_| dropped())?
    }

    /// Queues `job`, or refuses at once when the queue is full (the client is told to come
    /// back: waiting would only make every later request slower).
    fn send(&self, job: Job) -> Result<(), Error> {
        self.queue.try_send(job).map_err(|refused| match refused {
            mpsc::error::TrySendError::Full(_) => Error::Rejected(OVERLOADED),
            mpsc::error::TrySendError::Closed(_) => {
                Error::Unavailable("the database writer has stopped".into())
            }
        })
    }
}

fn dropped() -> Error {
    Error::Internal("the database writer dropped a write".into())
}

/// What one cycle of the writer handles.
#[derive(Default)]
struct Cycle {
    writes: Vec<Write>,
    /// The users of `writes`: one write per user and statement.
    users: HashSet<String>,
    to_decide: Vec<ReadDecideWrite>,
}

impl Cycle {
    /// Whether a write for `user_id` may join this cycle (the user has none in it yet).
    fn claim(&mut self, user_id: &str) -> bool {
        self.users.insert(user_id.to_owned())
    }

    fn len(&self) -> usize {
        self.writes.len() + self.to_decide.len()
    }
}

/// Takes what waits in the queue, cycle after cycle, until the queue closes: reads the users of
/// the commands it is to decide for (one statement), decides, and writes all of the cycle's
/// writes (one statement).
async fn writer(
    url: String,
    timeout: Duration,
    mut queue: mpsc::Receiver<Job>,
    busy: Arc<AtomicBool>,
) {
    let mut connection: Option<PgConnection> = None;
    let mut deferred: VecDeque<Write> = VecDeque::new();
    while let Some(cycle) = gather(&mut queue, &mut deferred).await {
        busy.store(true, Ordering::Release);
        run_cycle(cycle, &mut connection, &url, timeout).await;
        if queue.is_empty() && deferred.is_empty() {
            busy.store(false, Ordering::Release);
        }
    }
}

/// One cycle of the writer: decides for the commands that need it, writes the cycle's writes in
/// one statement, and answers each.
async fn run_cycle(
    mut cycle: Cycle,
    connection: &mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
) {
    if !cycle.to_decide.is_empty() {
        decide_for(&mut cycle, connection, url, timeout).await;
    }
    let mut batch = cycle.writes;
    if batch.is_empty() {
        return;
    }
    metrics::histogram!(WRITE_BATCH_SIZE).record(batch.len() as f64);
    // The statement locks users in this order (see `WRITE_BATCH`).
    batch.sort_unstable_by(|a, b| a.user_id().cmp(b.user_id()));
    let outcomes = write_isolating_failures(connection, url, timeout, &batch).await;
    let unanswered = answer(batch, outcomes);
    if !unanswered.is_empty() {
        tokio::spawn(in_doubt::resolve(url.to_owned(), timeout, unanswered));
    }
}

/// Answers each write of `batch` with its outcome; answers the writes in doubt, which are not
/// answered yet.
fn answer(batch: Vec<Write>, outcomes: Vec<Result<bool, Unwritten>>) -> Vec<Write> {
    let mut in_doubt = Vec::new();
    for (write, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            Ok(written) => write.reply.send(Ok(written)),
            Err(Unwritten::Failed(error)) => write.reply.send(Err(error)),
            Err(Unwritten::InDoubt) => in_doubt.push(write),
        }
    }
    in_doubt
}

impl DecidingWriter for GroupCommit {
    fn read_decide_write(
        &self,
        user_id: &str,
        decide: SharedDecide,
    ) -> impl Future<Output = Result<Decided, Error>> + Send {
        GroupCommit::read_decide_write(self, user_id, decide)
    }

    fn write_decision(
        &self,
        decision: &Decision,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        self.write(&decision.changes, decision.expected_version)
    }
}

/// Writes `write` by itself on the connection for lone writes, and answers it.
async fn write_alone(
    lone: Arc<LoneWrites>,
    mut connection: OwnedMutexGuard<Option<PgConnection>>,
    write: Write,
) {
    metrics::histogram!(WRITE_BATCH_SIZE).record(1.0);
    let batch = vec![write];
    let outcomes = write_isolating_failures(&mut connection, &lone.url, lone.timeout, &batch).await;
    drop(connection);
    let unanswered = answer(batch, outcomes);
    if !unanswered.is_empty() {
        in_doubt::resolve(lone.url.clone(), lone.timeout, unanswered).await;
    }
}

/// Why a write has no answer of its own.
#[derive(Clone, Debug)]
enum Unwritten {
    /// It was not written (nothing was sent, or the database refused the statement).
    Failed(Error),
    /// The statement was sent and its answer lost with the connection: written or not, to be
    /// found out.
    InDoubt,
}

/// Writes `batch` in one statement; whether each write happened. When the statement fails for
/// a reason other than the database being away, one write may be at fault (a value the
/// database refuses): each is then written alone, so that only the faulty one fails.
async fn write_isolating_failures(
    connection: &mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
    batch: &[Write],
) -> Vec<Result<bool, Unwritten>> {
    let written = write_on(connection, url, timeout, batch).await;
    match written {
        Ok(users) => batch
            .iter()
            .map(|write| Ok(users.contains(write.user_id())))
            .collect(),
        Err(unwritten @ Unwritten::InDoubt) => vec![Err(unwritten); batch.len()],
        Err(Unwritten::Failed(error))
            if batch.len() == 1 || matches!(error, Error::Unavailable(_)) =>
        {
            vec![Err(Unwritten::Failed(error)); batch.len()]
        }
        Err(Unwritten::Failed(_)) => {
            let mut outcomes = Vec::with_capacity(batch.len());
            for write in batch {
                let alone = write_on(connection, url, timeout, std::slice::from_ref(write)).await;
                outcomes.push(alone.map(|users| users.contains(write.user_id())));
            }
            outcomes
        }
    }
}

/// [`write_batch`] on the open connection or a new one; a failure drops the connection, whose
/// state is unknown after it. A statement sent whose answer was lost because the database went
/// away is in doubt; any other failure wrote nothing (Postgres rolls a failed statement back).
async fn write_on(
    connection: &mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
    batch: &[Write],
) -> Result<HashSet<String>, Unwritten> {
    let open = match reconnect(connection, url, timeout).await {
        Ok(open) => open,
        Err(error) => return Err(Unwritten::Failed(error)),
    };
    let written = write_batch(open, batch).await;
    if written.is_err() {
        *connection = None;
    }
    written.map_err(|error| match error {
        Error::Unavailable(_) => Unwritten::InDoubt,
        error => Unwritten::Failed(error),
    })
}

/// The next cycle: whatever waits now (no waiting for more), at most one write per user (a
/// repeat waits in `deferred` for a later cycle). `None` once the queue has closed.
async fn gather(queue: &mut mpsc::Receiver<Job>, deferred: &mut VecDeque<Write>) -> Option<Cycle> {
    let mut cycle = Cycle::default();
    let mut next = match deferred.pop_front() {
        Some(write) => Some(Job::Write(write)),
        None => Some(queue.recv().await?),
    };
    while let Some(job) = next {
        match job {
            // Its request has timed out and stopped waiting: the command is dropped unrun (the
            // client was told it may or may not have happened).
            _ if job.is_abandoned() => {}
            Job::ReadDecideWrite(command) => cycle.to_decide.push(command),
            Job::Write(write) => {
                if cycle.claim(write.user_id()) {
                    cycle.writes.push(write);
                } else {
                    deferred.push_back(write);
                    // Keep the order of the deferred ones: stop at the first repeat.
                    break;
                }
            }
        }
        if cycle.len() >= MAX_BATCH {
            break;
        }
        next = match deferred.pop_front() {
            Some(write) => Some(Job::Write(write)),
            None => queue.try_recv().ok(),
        };
    }
    Some(cycle)
}

/// Reads the users of the cycle's commands to decide for (one statement), lets the domain decide
/// on each, and adds the decisions to the cycle's writes. Refusals are answered at once, and so is
/// a decision whose user already has a write in this cycle: as not written, so that its command
/// reads and decides again after that write.
async fn decide_for(
    cycle: &mut Cycle,
    connection: &mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
) {
    let commands = std::mem::take(&mut cycle.to_decide);
    let ids: Vec<&str> = commands.iter().map(|c| c.user_id.as_str()).collect();
    let reads = read_isolating_failures(connection, url, timeout, &ids).await;
    for (command, read) in commands.into_iter().zip(reads) {
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                let _ = command.done.send(Err(error));
                continue;
            }
        };
        let decision = match decide_on_guarded(&command.user_id, read.clone(), &command.decide) {
            Ok(decision) => decision,
            Err(refusal) => {
                let _ = command.done.send(Ok(Decided {
                    read,
                    outcome: Err(refusal),
                }));
                continue;
            }
        };
        let (changes, expected_version) = (decision.changes.clone(), decision.expected_version);
        let reply = Reply::Decided(Box::new(DecidedFor {
            done: command.done,
            read,
            decision,
        }));
        let write = Write::new(&changes, expected_version, reply);
        if cycle.claim(write.user_id()) {
            cycle.writes.push(write);
        } else {
            write.reply.send(Ok(false));
        }
    }
}

/// The batch statement. `u` updates the users whose version is unchanged, taking their row locks
/// as it goes; only their events are appended and only their TOTP rows put or deleted.
///
/// The locks are taken in the order of the arrays, which the writer sorts by user id: every
/// writer of every instance locks in the same order, so two batches cannot deadlock. (The plan
/// is a nested loop driven by the arrays, probing the users' primary key: with sequential scans
/// off and a handful of rows per batch it is the cheapest plan on any table size.) Should a plan
/// ever lock in another order and Postgres break a deadlock, the batch counts as not written.
const WRITE_BATCH: &str = "WITH input AS ( \
       SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
         $6::bigint[], $7::bigint[], $26::text[]) \
         AS i(user_id, expected_version, state, sequence, change_date, failed_attempts, locked_until, \
           recovery_codes)), \
     u AS (UPDATE users SET state = i.state, sequence = i.sequence, change_date = i.change_date, \
         failed_attempts = i.failed_attempts, locked_until = i.locked_until, \
         recovery_codes = i.recovery_codes, version = users.version + 1 \
       FROM input i \
       WHERE users.user_id = i.user_id AND users.version = i.expected_version \
       RETURNING users.user_id), \
     e AS (INSERT INTO events (user_id, sequence, event_type, payload, resource_owner, creator, created_at, \
         command_id) \
       SELECT v.* FROM UNNEST($8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::bigint[], $24::text[]) \
         AS v(user_id, sequence, event_type, payload, resource_owner, creator, created_at, command_id) \
       WHERE v.user_id IN (SELECT user_id FROM u)), \
     p AS (INSERT INTO totp (user_id, state, key_id, secret_sealed, digits, period, last_used_step, created_at, \
         algorithm) \
       SELECT v.* FROM UNNEST($15::text[], $16::text[], $17::text[], $18::bytea[], $19::bigint[], \
         $20::bigint[], $21::bigint[], $22::bigint[], $25::text[]) \
         AS v(user_id, state, key_id, secret_sealed, digits, period, last_used_step, created_at, algorithm) \
       WHERE v.user_id IN (SELECT user_id FROM u) \
       ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, key_id = excluded.key_id, \
         secret_sealed = excluded.secret_sealed, digits = excluded.digits, period = excluded.period, \
         algorithm = excluded.algorithm, last_used_step = excluded.last_used_step, created_at = excluded.created_at), \
     d AS (DELETE FROM totp WHERE user_id = ANY($23::text[]) AND user_id IN (SELECT user_id FROM u)) \
     SELECT user_id FROM u";

/// One array parameter: `field` of every item.
fn column<'a, T, U>(items: &'a [T], field: impl Fn(&'a T) -> U) -> Vec<U> {
    items.iter().map(field).collect()
}

/// Writes a batch in one statement; answers the users whose write happened.
async fn write_batch(
    connection: &mut PgConnection,
    batch: &[Write],
) -> Result<HashSet<String>, Error> {
    let events: Vec<(&Write, &EventRow)> = batch
        .iter()
        .flat_map(|w| w.rows.events.iter().map(move |e| (w, e)))
        .collect();
    let puts: Vec<(&str, &PutTotp)> = batch
        .iter()
        .filter_map(|w| match &w.rows.totp {
            TotpRow::Put(put) => Some((w.user_id(), put)),
            _ => None,
        })
        .collect();
    let deletes: Vec<&str> = batch
        .iter()
        .filter(|w| matches!(w.rows.totp, TotpRow::Delete))
        .map(|w| w.user_id())
        .collect();
    let written: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(WRITE_BATCH)
        .bind(column(batch, |w| w.user_id()))
        .bind(column(batch, |w| w.expected_version))
        .bind(column(batch, |w| w.rows.user.state))
        .bind(column(batch, |w| w.rows.user.sequence))
        .bind(column(batch, |w| w.rows.user.change_date))
        .bind(column(batch, |w| w.rows.user.failed_attempts))
        .bind(column(batch, |w| w.rows.user.locked_until))
        .bind(column(&events, |(w, _)| w.user_id()))
        .bind(column(&events, |(_, e)| e.sequence))
        .bind(column(&events, |(_, e)| e.event_type))
        .bind(column(&events, |(_, e)| e.payload.as_str()))
        .bind(column(&events, |(_, e)| e.resource_owner.as_str()))
        .bind(column(&events, |(_, e)| e.creator.as_str()))
        .bind(column(&events, |(_, e)| e.created_at))
        .bind(column(&puts, |(user, _)| *user))
        .bind(column(&puts, |(_, p)| p.state))
        .bind(column(&puts, |(_, p)| p.key_id.as_str()))
        .bind(column(&puts, |(_, p)| p.secret_sealed.as_slice()))
        .bind(column(&puts, |(_, p)| p.digits))
        .bind(column(&puts, |(_, p)| p.period))
        .bind(column(&puts, |(_, p)| p.last_used_step))
        .bind(column(&puts, |(_, p)| p.created_at))
        .bind(deletes)
        .bind(column(&events, |(w, _)| w.rows.command_id.as_str()))
        .bind(column(&puts, |(_, p)| p.algorithm))
        .bind(column(batch, |w| w.rows.user.recovery_codes.as_str()))
        .fetch_all(connection)
        .await;
    match written {
        Ok(written) => Ok(written.into_iter().collect()),
        // Postgres rolled the whole statement back: nothing was written, every command reads
        // and decides again.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DEADLOCK_DETECTED) => {
            Ok(HashSet::new())
        }
        Err(e) => Err(classify("writing users' changes", e)),
    }
}
