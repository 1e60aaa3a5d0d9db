//! The command cycle both stores run (see `domain::store::Store::update`): decide on the user's
//! state, write the outcome on the condition that the user's row is still at the version decided
//! on, and, when another write came first, decide again on the state it left. The first decision
//! may rest on the cached state ([`SnapshotCache`]); a refusal decided on it is never answered
//! (it writes nothing, and the cache may be behind), so the command decides again on a read.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::cache::SnapshotCache;
use crate::domain::error::Error;
use crate::domain::store::{Changes, Committed, Decide, Snapshot, TotpChange};
use crate::domain::types::{TotpRecord, UserRecord};

/// The domain's decision, shareable with a writer task and callable more than once.
pub(super) type SharedDecide =
    Arc<dyn Fn(Option<Snapshot>) -> Result<Changes, Error> + Send + Sync>;

/// A decision ready to be written: the changes and the version of the state they rest on.
#[derive(Debug)]
pub(super) struct Decision {
    pub changes: Arc<Changes>,
    pub expected_version: u64,
    /// The TOTP the changes were decided on (it stays when they keep it).
    pub totp_before: Option<TotpRecord>,
}

/// How one attempt of a command ended.
pub(super) enum Attempt {
    /// The decision was written.
    Written(Decision),
    /// Another write came first: the state decided on is gone.
    Lost,
    /// The domain refused (nothing was written).
    Refused(Error),
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

/// [`decide_on`] for a writer that serves every command: a decision that panics is an internal
/// error of that command, not the end of the writer.
pub(super) fn decide_on_guarded(
    user_id: &str,
    snapshot: Option<Snapshot>,
    decide: &SharedDecide,
) -> Result<Decision, Error> {
    catch_unwind(AssertUnwindSafe(|| decide_on(user_id, snapshot, decide)))
        .unwrap_or_else(|_| Err(Error::Internal("a decision panicked".into())))
}

/// What a writer did for a command on a user not at hand, which it read, decided and wrote
/// itself, in one go.
#[derive(Debug)]
pub(super) struct Decided {
    /// The user as read (`None`: there is no such user).
    pub read: Option<Snapshot>,
    /// The refusal, or the decision and whether it was written (false: the version had moved on
    /// between the read and the write).
    pub outcome: Result<(Decision, bool), Error>,
}

impl Decided {
    /// Remembers what was read in `cache`; answers the attempt this was.
    pub fn remember_in(self, cache: &SnapshotCache) -> Attempt {
        if let Some(read) = self.read {
            cache.put(read);
        }
        match self.outcome {
            Ok((decision, true)) => Attempt::Written(decision),
            Ok((_, false)) => Attempt::Lost,
            Err(refusal) => Attempt::Refused(refusal),
        }
    }
}

/// A writer that can also read and decide itself (both stores' writers).
pub(super) trait DecidingWriter: Sync {
    /// Reads `user_id`, lets `decide` decide on it and writes the decision.
    fn read_decide_write(
        &self,
        user_id: &str,
        decide: SharedDecide,
    ) -> impl Future<Output = Result<Decided, Error>> + Send;

    /// Writes `decision` if the user is still at the version it was decided on; answers whether
    /// it was.
    fn write_decision(
        &self,
        decision: &Decision,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// One attempt of a command (see [`update`]): a user at hand (`cached`) is decided on here and
/// the changes handed to the writer; a user not at hand goes to the writer whole, which spares
/// the command a read of its own.
pub(super) async fn attempt_once(
    cache: &SnapshotCache,
    writer: &impl DecidingWriter,
    user_id: &str,
    cached: Option<Snapshot>,
    decide: SharedDecide,
) -> Result<Attempt, Error> {
    let Some(snapshot) = cached else {
        let decided = writer.read_decide_write(user_id, decide).await?;
        return Ok(decided.remember_in(cache));
    };
    let decision = match decide_on(user_id, Some(snapshot), &decide) {
        Ok(decision) => decision,
        Err(refusal) => return Ok(Attempt::Refused(refusal)),
    };
    Ok(if writer.write_decision(&decision).await? {
        Attempt::Written(decision)
    } else {
        Attempt::Lost
    })
}

/// Runs a command: `attempt` is given the cached state of the user, if any (`None`: it reads),
/// decides and writes; after a lost race it is run again, with a short random pause when the
/// race was with another writer (not merely with a stale cache entry).
pub(super) async fn update<Run, Fut>(
    cache: &SnapshotCache,
    user_id: &str,
    decide: Decide,
    mut attempt: Run,
) -> Result<Committed, Error>
where
    Run: FnMut(Option<Snapshot>, SharedDecide) -> Fut,
    Fut: Future<Output = Result<Attempt, Error>>,
{
    let decide: SharedDecide = Arc::from(decide);
    let mut cached = cache.get(user_id);
    // Bounded by the caller's request timeout; each lost race means another writer succeeded.
    for round in 0u32.. {
        let from_cache = cached.is_some();
        match attempt(cached.take(), decide.clone()).await? {
            Attempt::Written(decision) => {
                cache.put(state_after(
                    &decision.changes,
                    decision.totp_before,
                    decision.expected_version + 1,
                ));
                return Ok(committed(Arc::unwrap_or_clone(decision.changes)));
            }
            Attempt::Refused(_) if from_cache => {}
            Attempt::Refused(refusal) => return Err(refusal),
            Attempt::Lost if from_cache => {}
            Attempt::Lost => back_off(round).await,
        }
    }
    unreachable!("the retry loop only ends by returning")
}

/// The user's state once `changes` are written: the row at `version`, and the TOTP row as changed
/// (or as it was, `totp_before`, if the changes keep it).
pub(super) fn state_after(
    changes: &Changes,
    totp_before: Option<TotpRecord>,
    version: u64,
) -> Snapshot {
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

/// What a written command left.
pub(super) fn committed(changes: Changes) -> Committed {
    Committed {
        details: changes.user.details(),
        user: changes.user,
        outcome: changes.outcome,
    }
}

/// A short random pause after a lost race, growing with the attempts, so that writers on one
/// user do not collide again in lockstep.
async fn back_off(attempt: u32) {
    let ceiling_micros = 200 * u64::from(attempt.min(20)) + 100;
    let pause = rand::thread_rng().gen_range(0..ceiling_micros);
    tokio::time::sleep(Duration::from_micros(pause)).await;
}
