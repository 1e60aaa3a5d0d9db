//! The SQL behind the storage port, for Postgres and SQLite alike. Each write is one transaction:
//! lock the user's row (Postgres `SELECT … FOR UPDATE`, SQLite `BEGIN IMMEDIATE`), let the domain
//! decide, append its events, store the new user and TOTP rows, commit.

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction, query::Query};

use super::{Dialect, classify};
use crate::domain::clock::Timestamp;
use crate::domain::error::{self, Error};
use crate::domain::service::details_of;
use crate::domain::store::{Changes, Committed, Decide, Snapshot, Store, TotpChange};
use crate::domain::types::{Profile, SealedSecret, TotpRecord, TotpState, UserRecord, UserState};

/// The store over one sqlx pool.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

const SELECT_SNAPSHOT: &str = "SELECT u.user_id, u.resource_owner, u.username, u.email, \
     u.email_verified, u.profile, u.state, u.sequence, u.created_at, u.change_date, \
     u.failed_attempts, u.locked_until, t.state AS totp_state, t.key_id, t.secret_sealed, \
     t.digits, t.period, t.last_used_step, t.created_at AS totp_created_at \
     FROM users u LEFT JOIN totp t ON t.user_id = u.user_id WHERE u.user_id = $1";

const UPDATE_USER: &str = "UPDATE users SET state = $2, sequence = $3, change_date = $4, \
     failed_attempts = $5, locked_until = $6 WHERE user_id = $1";

const UPSERT_TOTP: &str = "INSERT INTO totp (user_id, state, key_id, secret_sealed, digits, \
     period, last_used_step, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, key_id = excluded.key_id, \
     secret_sealed = excluded.secret_sealed, digits = excluded.digits, period = excluded.period, \
     last_used_step = excluded.last_used_step, created_at = excluded.created_at";

const INSERT_USER: &str = "INSERT INTO users (user_id, resource_owner, username, email, \
     email_verified, profile, state, sequence, created_at, change_date, failed_attempts, \
     locked_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (user_id) DO NOTHING";

impl SqlStore {
    pub fn new(pool: AnyPool, dialect: Dialect) -> Self {
        SqlStore { pool, dialect }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a transaction that will write: SQLite takes its write lock now, so that the read
    /// that follows cannot go stale before the write (a deferred transaction would fail to upgrade).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, Error> {
        let begun = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        };
        begun.map_err(|e| classify("beginning a transaction", e))
    }

    fn select_for_update(&self) -> String {
        match self.dialect {
            Dialect::Postgres => format!("{SELECT_SNAPSHOT} FOR UPDATE OF u"),
            Dialect::Sqlite => SELECT_SNAPSHOT.to_owned(),
        }
    }

    /// Appends the events and writes the rows of `changes`.
    async fn write(tx: &mut Transaction<'static, Any>, changes: &Changes) -> Result<(), Error> {
        let user = &changes.user;
        if !changes.events.is_empty() {
            let first = user.sequence - changes.events.len() as u64 + 1;
            let mut sql = String::from(
                "INSERT INTO events (user_id, sequence, event_type, payload, resource_owner, creator, created_at) VALUES ",
            );
            for index in 0..changes.events.len() {
                let base = index * 7;
                if index > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    base + 1,
                    base + 2,
                    base + 3,
                    base + 4,
                    base + 5,
                    base + 6,
                    base + 7
                ));
            }
            let mut insert = sqlx::query(&sql);
            for (offset, event) in changes.events.iter().enumerate() {
                insert = insert
                    .bind(user.user_id.clone())
                    .bind((first + offset as u64) as i64)
                    .bind(event.event_type)
                    .bind(event.payload.to_string())
                    .bind(user.resource_owner.clone())
                    .bind(changes.creator.clone())
                    .bind(changes.at.0);
            }
            insert
                .execute(&mut **tx)
                .await
                .map_err(|e| classify("appending events", e))?;
        }
        match &changes.totp {
            TotpChange::Keep => {}
            TotpChange::Put(totp) => {
                bind_totp(sqlx::query(UPSERT_TOTP), &user.user_id, totp)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| classify("storing the TOTP", e))?;
            }
            TotpChange::Delete => {
                sqlx::query("DELETE FROM totp WHERE user_id = $1")
                    .bind(user.user_id.clone())
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| classify("removing the TOTP", e))?;
            }
        }
        Ok(())
    }
}

fn bind_totp<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    user_id: &str,
    totp: &TotpRecord,
) -> Query<'q, Any, AnyArguments<'q>> {
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

/// Reads a snapshot row. A row that does not parse is a damaged database: an internal error.
fn snapshot_from_row(row: &AnyRow) -> Result<Snapshot, sqlx::Error> {
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

#[async_trait]
impl Store for SqlStore {
    async fn insert_user(&self, changes: Changes) -> Result<Committed, Error> {
        let user = &changes.user;
        let profile = serde_json::to_string(&user.profile)
            .map_err(|e| Error::Internal(format!("encoding a profile: {e}")))?;
        let mut tx = self.begin_write().await?;
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
            return Err(error::USER_ALREADY_EXISTS.into());
        }
        Self::write(&mut tx, &changes).await?;
        tx.commit().await.map_err(|e| classify("committing", e))?;
        committed(changes)
    }

    async fn load(&self, user_id: &str) -> Result<Option<Snapshot>, Error> {
        let row = sqlx::query(SELECT_SNAPSHOT)
            .bind(user_id.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| classify("loading a user", e))?;
        row.as_ref()
            .map(snapshot_from_row)
            .transpose()
            .map_err(|e| classify("reading a user row", e))
    }

    async fn update(&self, user_id: &str, decide: Decide) -> Result<Committed, Error> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&self.select_for_update())
            .bind(user_id.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify("locking a user", e))?;
        let snapshot = row
            .as_ref()
            .map(snapshot_from_row)
            .transpose()
            .map_err(|e| classify("reading a user row", e))?;
        // An Err here drops the transaction, which rolls it back.
        let changes = decide(snapshot)?;
        let user = &changes.user;
        sqlx::query(UPDATE_USER)
            .bind(user.user_id.clone())
            .bind(user.state.as_str())
            .bind(user.sequence as i64)
            .bind(user.change_date.0)
            .bind(i64::from(user.failed_attempts))
            .bind(user.locked_until.map(|t| t.0))
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("updating a user", e))?;
        Self::write(&mut tx, &changes).await?;
        tx.commit().await.map_err(|e| classify("committing", e))?;
        committed(changes)
    }

    async fn totp_sealed_with_other_key(
        &self,
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
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify("listing secrets to re-seal", e))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("user_id"))
            .collect::<Result<_, _>>()
            .map_err(|e| classify("reading user ids", e))
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| classify("pinging the database", e))
    }
}
