//! What both databases share: the tables' SQL that is the same on both, a stored row as a
//! [`Snapshot`], and one mapping from a decision's [`Changes`] to the values of the rows it
//! writes ([`RowValues`]), which the SQLite statements and the Postgres batch statement both bind.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sqlx::{AnyConnection, Row};

use super::classify;
use crate::domain::clock::Timestamp;
use crate::domain::error::{self, Error};
use crate::domain::recovery::CodeHash;
use crate::domain::store::{Changes, Snapshot, TotpChange};
use crate::domain::totp::{Algorithm, Parameters};
use crate::domain::types::{Profile, SealedSecret, TotpRecord, TotpState, UserRecord, UserState};

/// `SELECT` of a snapshot (a user and its TOTP, in one statement so that the two agree),
/// followed by the condition.
macro_rules! select_snapshot {
    ($condition:literal) => {
        concat!(
            "SELECT u.user_id, u.resource_owner, u.username, u.email, u.email_verified, \
             u.profile, u.state, u.sequence, u.created_at, u.change_date, u.failed_attempts, \
             u.locked_until, u.version, u.recovery_codes, t.state AS totp_state, t.key_id, t.secret_sealed, \
             t.digits, t.period, t.algorithm, t.last_used_step, t.created_at AS totp_created_at \
             FROM users u LEFT JOIN totp t ON t.user_id = u.user_id WHERE ",
            $condition
        )
    };
}
pub(super) use select_snapshot;

/// Inserts a user at version 0 unless its id is taken (`$1`–`$13`: a [`NewUserRow`]).
pub(super) const INSERT_USER: &str = "INSERT INTO users (user_id, resource_owner, username, email, \
     email_verified, profile, state, sequence, created_at, change_date, failed_attempts, \
     locked_until, recovery_codes, version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0) \
     ON CONFLICT (user_id) DO NOTHING";

/// The columns of a TOTP row, in the order [`PutTotp`] binds them.
pub(super) const TOTP_COLUMNS: &str =
    "user_id, state, key_id, secret_sealed, digits, period, algorithm, last_used_step, created_at";

/// What a put TOTP row changes when the user has one already.
pub(super) const TOTP_ON_CONFLICT: &str = "ON CONFLICT (user_id) DO UPDATE SET \
     state = excluded.state, key_id = excluded.key_id, secret_sealed = excluded.secret_sealed, \
     digits = excluded.digits, period = excluded.period, algorithm = excluded.algorithm, \
     last_used_step = excluded.last_used_step, created_at = excluded.created_at";

/// The columns of an event row, in the order [`EventRow`] binds them.
pub(super) const EVENT_COLUMNS: &str =
    "user_id, sequence, event_type, payload, resource_owner, creator, created_at, command_id";

/// The rows a decision writes.
#[derive(Debug)]
pub(super) struct RowValues {
    /// A fresh id for this attempt to write, stored with each of its events: how a write whose
    /// answer was lost is found again (see `postgres::in_doubt`).
    pub command_id: String,
    pub user: UserRow,
    pub events: Vec<EventRow>,
    pub totp: TotpRow,
}

/// The changing columns of the user row.
#[derive(Debug)]
pub(super) struct UserRow {
    pub user_id: String,
    pub state: &'static str,
    pub sequence: i64,
    pub change_date: i64,
    pub failed_attempts: i64,
    pub locked_until: Option<i64>,
    pub recovery_codes: String,
}

/// One event row (its user id is the user row's).
#[derive(Debug)]
pub(super) struct EventRow {
    pub sequence: i64,
    pub event_type: &'static str,
    pub payload: String,
    pub resource_owner: String,
    pub creator: String,
    pub created_at: i64,
}

/// What happens to the TOTP row.
#[derive(Debug)]
pub(super) enum TotpRow {
    Keep,
    Put(PutTotp),
    Delete,
}

/// A TOTP row to insert or replace (its user id is the user row's).
#[derive(Debug)]
pub(super) struct PutTotp {
    pub state: &'static str,
    pub key_id: String,
    pub secret_sealed: Vec<u8>,
    pub digits: i64,
    pub period: i64,
    pub algorithm: &'static str,
    pub last_used_step: Option<i64>,
    pub created_at: i64,
}

impl RowValues {
    /// The rows of `changes`; events are numbered up to the user's new sequence.
    pub fn of(changes: &Changes) -> RowValues {
        let user = &changes.user;
        let first = user.sequence - changes.events.len() as u64 + 1;
        let events = changes
            .events
            .iter()
            .enumerate()
            .map(|(offset, event)| EventRow {
                sequence: (first + offset as u64) as i64,
                event_type: event.event_type,
                payload: event.payload.to_string(),
                resource_owner: user.resource_owner.clone(),
                creator: changes.creator.clone(),
                created_at: changes.at.0,
            })
            .collect();
        let totp = match &changes.totp {
            TotpChange::Keep => TotpRow::Keep,
            TotpChange::Delete => TotpRow::Delete,
            TotpChange::Put(totp) => TotpRow::Put(PutTotp::of(totp)),
        };
        RowValues {
            command_id: format!("{:032x}", rand::random::<u128>()),
            user: UserRow {
                user_id: user.user_id.clone(),
                state: user.state.as_str(),
                sequence: user.sequence as i64,
                change_date: user.change_date.0,
                failed_attempts: i64::from(user.failed_attempts),
                locked_until: user.locked_until.map(|t| t.0),
                recovery_codes: encode_code_hashes(&user.recovery_codes),
            },
            events,
            totp,
        }
    }
}

impl PutTotp {
    fn of(totp: &TotpRecord) -> PutTotp {
        PutTotp {
            state: totp.state.as_str(),
            key_id: totp.secret.key_id.clone(),
            secret_sealed: totp.secret.ciphertext.clone(),
            digits: i64::from(totp.parameters.digits),
            period: i64::from(totp.parameters.period),
            algorithm: totp.parameters.algorithm.as_str(),
            last_used_step: totp.last_used_step,
            created_at: totp.created_at.0,
        }
    }
}

/// A new user's row, in the order [`INSERT_USER`] binds it.
pub(super) struct NewUserRow {
    pub user_id: String,
    pub resource_owner: String,
    pub username: String,
    pub email: String,
    pub email_verified: i64,
    pub profile: String,
    pub state: &'static str,
    pub sequence: i64,
    pub created_at: i64,
    pub change_date: i64,
    pub failed_attempts: i64,
    pub locked_until: Option<i64>,
    pub recovery_codes: String,
}

impl NewUserRow {
    /// The user row that `changes` creates.
    pub fn of(changes: &Changes) -> Result<NewUserRow, Error> {
        let user = &changes.user;
        Ok(NewUserRow {
            user_id: user.user_id.clone(),
            resource_owner: user.resource_owner.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            email_verified: i64::from(user.email_verified),
            profile: serde_json::to_string(&user.profile)
                .map_err(|e| Error::Internal(format!("encoding a profile: {e}")))?,
            state: user.state.as_str(),
            sequence: user.sequence as i64,
            created_at: user.created_at.0,
            change_date: user.change_date.0,
            failed_attempts: i64::from(user.failed_attempts),
            locked_until: user.locked_until.map(|t| t.0),
            recovery_codes: encode_code_hashes(&user.recovery_codes),
        })
    }
}

/// `($first, $first+1, …)`: `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    format!("({})", list.join(", "))
}

/// Appends the events of `rows` in one statement.
pub(super) async fn insert_events(conn: &mut AnyConnection, rows: &RowValues) -> Result<(), Error> {
    let events = &rows.events;
    if events.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (0..events.len())
        .map(|i| placeholders(1 + i * 8, 8))
        .collect();
    let sql = format!(
        "INSERT INTO events ({EVENT_COLUMNS}) VALUES {}",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for event in events {
        query = query
            .bind(rows.user.user_id.clone())
            .bind(event.sequence)
            .bind(event.event_type)
            .bind(event.payload.clone())
            .bind(event.resource_owner.clone())
            .bind(event.creator.clone())
            .bind(event.created_at)
            .bind(rows.command_id.clone());
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("appending events", e))?;
    Ok(())
}

/// Applies `totp` to the TOTP row of `user_id`.
pub(super) async fn write_totp(
    conn: &mut AnyConnection,
    user_id: &str,
    totp: &TotpRow,
) -> Result<(), Error> {
    match totp {
        TotpRow::Keep => Ok(()),
        TotpRow::Put(put) => {
            let sql = format!(
                "INSERT INTO totp ({TOTP_COLUMNS}) VALUES {} {TOTP_ON_CONFLICT}",
                placeholders(1, 9)
            );
            sqlx::query(&sql)
                .bind(user_id.to_owned())
                .bind(put.state)
                .bind(put.key_id.clone())
                .bind(put.secret_sealed.clone())
                .bind(put.digits)
                .bind(put.period)
                .bind(put.algorithm)
                .bind(put.last_used_step)
                .bind(put.created_at)
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("storing the TOTP", e))?;
            Ok(())
        }
        TotpRow::Delete => {
            sqlx::query("DELETE FROM totp WHERE user_id = $1")
                .bind(user_id.to_owned())
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("removing the TOTP", e))?;
            Ok(())
        }
    }
}

/// Inserts a new user with its first events and TOTP (`rows`, the row values of `changes`),
/// inside the caller's open transaction; refuses with `USER_ALREADY_EXISTS` (and writes nothing)
/// when the id is taken, unless it was taken by this very attempt (`rows.command_id`: an insert
/// tried again after its first answer was lost).
pub(super) async fn insert_user(
    conn: &mut AnyConnection,
    changes: &Changes,
    rows: &RowValues,
) -> Result<(), Error> {
    let user = NewUserRow::of(changes)?;
    let inserted = sqlx::query(INSERT_USER)
        .bind(user.user_id)
        .bind(user.resource_owner)
        .bind(user.username)
        .bind(user.email)
        .bind(user.email_verified)
        .bind(user.profile)
        .bind(user.state)
        .bind(user.sequence)
        .bind(user.created_at)
        .bind(user.change_date)
        .bind(user.failed_attempts)
        .bind(user.locked_until)
        .bind(user.recovery_codes)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("inserting a user", e))?;
    if inserted.rows_affected() == 0 {
        return if written_by(conn, rows).await? {
            Ok(())
        } else {
            Err(error::USER_ALREADY_EXISTS.into())
        };
    }
    insert_events(conn, rows).await?;
    write_totp(conn, &rows.user.user_id, &rows.totp).await
}

/// Whether the events of `rows` (found by their user, first sequence and command id) are stored.
pub(super) async fn written_by(conn: &mut AnyConnection, rows: &RowValues) -> Result<bool, Error> {
    let Some(first) = rows.events.first() else {
        return Ok(false);
    };
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE user_id = $1 AND sequence = $2 AND command_id = $3",
    )
    .bind(rows.user.user_id.clone())
    .bind(first.sequence)
    .bind(rows.command_id.clone())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| classify("looking for a command's events", e))?;
    Ok(found.is_some())
}

/// Up to `limit` ids of users after `after` whose TOTP is sealed under a key other than `key_id`.
pub(super) async fn totp_sealed_with_other_key(
    conn: &mut AnyConnection,
    key_id: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(
        "SELECT user_id FROM totp WHERE key_id <> $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
    )
    .bind(key_id.to_owned())
    .bind(after.to_owned())
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(|e| classify("listing secrets to re-seal", e))?;
    rows.iter()
        .map(|row| row.try_get::<String, _>("user_id"))
        .collect::<Result<_, _>>()
        .map_err(|e| classify("reading user ids", e))
}

/// Whether the database answers.
pub(super) async fn ping(conn: &mut AnyConnection) -> Result<(), Error> {
    sqlx::query("SELECT 1")
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| classify("pinging the database", e))
}

/// A row of [`select_snapshot!`] as a database library hands it over, read by column name (NULL
/// is `None`).
pub(super) trait SnapshotRow {
    type Error;
    fn text(&self, column: &str) -> Result<Option<String>, Self::Error>;
    fn int(&self, column: &str) -> Result<Option<i64>, Self::Error>;
    fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The error for a stored value that does not parse.
    fn unreadable(what: &str) -> Self::Error;
}

/// sqlx's rows of both databases.
macro_rules! sqlx_snapshot_row {
    ($($row:ty),*) => {$(
        impl SnapshotRow for $row {
            type Error = sqlx::Error;
            fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }
            fn int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }
            fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(column)
            }
            fn unreadable(what: &str) -> sqlx::Error {
                sqlx::Error::Decode(format!("stored {what} does not parse").into())
            }
        }
    )*};
}
sqlx_snapshot_row!(sqlx::any::AnyRow, sqlx::postgres::PgRow);

/// Reads a snapshot row. A row that does not parse is a damaged database: an internal error.
pub(super) fn snapshot_from_row<R: SnapshotRow>(row: &R) -> Result<Snapshot, R::Error> {
    let text = |column: &str| row.text(column)?.ok_or_else(|| R::unreadable(column));
    let int = |column: &str| row.int(column)?.ok_or_else(|| R::unreadable(column));
    let state = text("state")?;
    let profile = text("profile")?;
    let user = UserRecord {
        user_id: text("user_id")?,
        resource_owner: text("resource_owner")?,
        username: text("username")?,
        email: text("email")?,
        email_verified: int("email_verified")? != 0,
        profile: serde_json::from_str::<Profile>(&profile).map_err(|_| R::unreadable("profile"))?,
        state: UserState::parse(&state).ok_or_else(|| R::unreadable("user state"))?,
        sequence: int("sequence")? as u64,
        created_at: Timestamp(int("created_at")?),
        change_date: Timestamp(int("change_date")?),
        failed_attempts: int("failed_attempts")? as u32,
        locked_until: row.int("locked_until")?.map(Timestamp),
        recovery_codes: decode_code_hashes(&text("recovery_codes")?)
            .ok_or_else(|| R::unreadable("recovery codes"))?,
        version: int("version")? as u64,
    };
    let totp = match row.text("totp_state")? {
        None => None,
        Some(totp_state) => Some(TotpRecord {
            state: TotpState::parse(&totp_state).ok_or_else(|| R::unreadable("TOTP state"))?,
            secret: SealedSecret {
                key_id: text("key_id")?,
                ciphertext: row
                    .blob("secret_sealed")?
                    .ok_or_else(|| R::unreadable("secret_sealed"))?,
            },
            parameters: Parameters {
                algorithm: Algorithm::parse(&text("algorithm")?)
                    .ok_or_else(|| R::unreadable("TOTP algorithm"))?,
                digits: int("digits")? as u32,
                period: int("period")? as u32,
            },
            last_used_step: row.int("last_used_step")?,
            created_at: Timestamp(int("totp_created_at")?),
        }),
    };
    Ok(Snapshot { user, totp })
}

/// The stored form of recovery code hashes: base64, comma-separated.
fn encode_code_hashes(hashes: &[CodeHash]) -> String {
    let encoded: Vec<String> = hashes
        .iter()
        .map(|hash| BASE64.encode(hash.as_bytes()))
        .collect();
    encoded.join(",")
}

/// Reads what [`encode_code_hashes`] wrote; `None` if it was not that.
fn decode_code_hashes(stored: &str) -> Option<Vec<CodeHash>> {
    stored
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            BASE64
                .decode(part)
                .ok()
                .and_then(|bytes| CodeHash::from_bytes(&bytes))
        })
        .collect()
}

/// Commits `tx` if `outcome` is a success, else rolls it back; answers `outcome`.
pub(super) async fn commit_or_roll_back<T>(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    outcome: Result<T, Error>,
) -> Result<T, Error> {
    match outcome {
        Ok(value) => {
            tx.commit().await.map_err(|e| classify("committing", e))?;
            Ok(value)
        }
        Err(error) => {
            tx.rollback()
                .await
                .map_err(|e| classify("rolling back", e))?;
            Err(error)
        }
    }
}
