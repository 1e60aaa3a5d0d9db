//! The storage port: what the domain needs from a database, and nothing of SQL. An adapter in
//! `crate::store` implements it. A write reads the user's state, hands it to the domain's
//! decision, and stores the outcome with its events atomically, on the condition that the user's
//! row is still the version the decision saw; if another write came first, it reads and decides
//! again. So every decision (replay, lockout count) holds against parallel requests and several
//! service instances, without holding a lock while the domain thinks.

use async_trait::async_trait;

use super::clock::Timestamp;
use super::error::{Error, Rejection};
use super::types::{Details, TotpRecord, UserRecord};

/// A user and its TOTP credential, as read inside (or outside) a transaction.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub user: UserRecord,
    pub totp: Option<TotpRecord>,
}

/// One event to append to the user's log.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_type: &'static str,
    /// Audit data; never a secret or a code.
    pub payload: serde_json::Value,
}

/// What to do with the TOTP row.
#[derive(Clone, Debug, PartialEq)]
pub enum TotpChange {
    Keep,
    Put(TotpRecord),
    Delete,
}

/// The outcome of a decision, written in one transaction.
#[derive(Clone, Debug)]
pub struct Changes {
    /// When the events happened.
    pub at: Timestamp,
    /// Who caused them (the token's subject).
    pub creator: String,
    /// Events in order; numbered `user.sequence - events.len() + 1 ..= user.sequence`.
    pub events: Vec<NewEvent>,
    /// The user row after the change.
    pub user: UserRecord,
    pub totp: TotpChange,
    /// How the command is answered once the changes are written; the store hands it back in
    /// [`Committed`] without looking at it.
    pub outcome: Outcome,
}

/// How a decision that writes is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write the changes and answer with success.
    Accept,
    /// Write the changes (a failed attempt is recorded), then answer with the refusal.
    RecordAndRefuse(Rejection),
}

/// What a committed write left: the details for the client, the user row as written, and the
/// answer its decision chose.
#[derive(Clone, Debug)]
pub struct Committed {
    pub details: Details,
    pub user: UserRecord,
    pub outcome: Outcome,
}

/// The domain's decision on the current state (`None` when the user does not exist). An `Err`
/// is answered without writing anything. It may run more than once (after a lost race, or on
/// the database's state after a refusal of a remembered one), so it must depend only on the state
/// it is given.
pub type Decide = Box<dyn Fn(Option<Snapshot>) -> Result<Changes, Error> + Send + Sync>;

/// Database connections by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub in_use: u32,
    pub idle: u32,
}

/// Storage for users, their TOTP credentials and their event log.
///
/// A caller may stop waiting for any method at any point (a request's timeout, a client gone).
/// The store then still finishes what it started, so a change lands whole or not at all and no
/// connection is left inside a transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new user (and optionally a TOTP) with its first events, or refuses with
    /// `USER_ALREADY_EXISTS` when the id is taken.
    async fn insert_user(&self, changes: Changes) -> Result<Committed, Error>;

    /// Reads a user and its TOTP without locking.
    async fn load(&self, user_id: &str) -> Result<Option<Snapshot>, Error>;

    /// Reads the user, lets `decide` choose the changes and writes them with their events, all or
    /// nothing, if the user's row is unchanged since the read; else reads and decides again. The
    /// first read may be of a remembered state, as long as the write's condition guards it and a
    /// refusal decided on it is decided again on the database's state.
    async fn update(&self, user_id: &str, decide: Decide) -> Result<Committed, Error>;

    /// Up to `limit` ids of users, in id order after `after`, whose TOTP secret is sealed under a
    /// key other than `key_id` (for re-sealing under a new key).
    async fn totp_sealed_with_other_key(
        &self,
        key_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Error>;

    /// How many database connections are in use and idle.
    fn connection_stats(&self) -> ConnectionStats;

    /// Closes the connections (at shutdown).
    async fn close(&self);

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), Error>;
}
