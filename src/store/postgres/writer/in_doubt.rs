//! Writes whose answer was lost: the statement was sent, then the connection broke (the primary
//! crashed or failed over, the network dropped) before its result came. The write may or may not
//! have landed, and the client must not be told either at random: "failed" for a verification
//! that happened, or "done" for a code check that never counted.
//!
//! So each write carries a command id of its own, stored with its events, and the writer finds
//! out, on a fresh connection to whatever is primary by then:
//! 1. the **fence**: each in-doubt user's row version is bumped if it is still the version the
//!    write expected. The update waits for the row lock of a lost statement still running, and a
//!    lost statement that arrives later finds the version moved and writes nothing. After the
//!    fence, whether each write landed is settled for good.
//! 2. the **lookup**: the events with the writes' command ids. Found, the command succeeded;
//!    absent, it did not, and never will (code 14, safe to retry).
//!
//! Until a primary answers, the writer keeps trying (new writes go on meanwhile: they fail fast
//! or land, guarded by the version as always), for as long as someone waits for an answer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::Write;
use crate::domain::error::Error;
use crate::store::classify;
use crate::store::postgres::session::connect;

/// Counter of in-doubt writes by how they ended (`settled`: landed, absent, or unsettled when
/// nobody waited any more or no primary answered within [`PATIENCE`]).
pub const IN_DOUBT_WRITES: &str = "totp_db_in_doubt_writes_total";

/// How long in-doubt writes are looked after at most (a request's timeout is far shorter: by
/// then nobody waits).
pub(in crate::store::postgres) const PATIENCE: Duration = Duration::from_secs(60);

/// Pause between attempts while no primary answers.
pub(in crate::store::postgres) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Bumps the version of each user still at the version its lost write expected.
const FENCE: &str = "UPDATE users SET version = users.version + 1 \
     FROM UNNEST($1::text[], $2::bigint[]) AS i(user_id, expected_version) \
     WHERE users.user_id = i.user_id AND users.version = i.expected_version";

/// The command ids, of those given with their user and first event's sequence, that are stored.
const LOOKUP: &str = "SELECT e.command_id \
     FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS i(user_id, sequence, command_id) \
     JOIN events e ON e.user_id = i.user_id AND e.sequence = i.sequence \
       AND e.command_id = i.command_id";

/// Settles `writes` (sorted by user id, as the batch was) and answers each: written, or
/// `Unavailable` when it did not land. Writes whose requests stopped waiting are dropped.
pub(super) async fn resolve(url: String, timeout: Duration, mut writes: Vec<Write>) {
    let started = Instant::now();
    loop {
        let waiting = writes.len();
        writes.retain(|write| !write.reply.is_closed());
        count(UNSETTLED, waiting - writes.len());
        if writes.is_empty() {
            return;
        }
        match settle(&url, timeout, &writes).await {
            Ok(found) => {
                for write in writes {
                    let landed = found.contains(&write.rows.command_id);
                    count(if landed { "landed" } else { "absent" }, 1);
                    write
                        .reply
                        .send(if landed { Ok(true) } else { Err(not_written()) });
                }
                return;
            }
            Err(error) if started.elapsed() >= PATIENCE => {
                count(UNSETTLED, writes.len());
                for write in writes {
                    write.reply.send(Err(error.clone()));
                }
                return;
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

const UNSETTLED: &str = "unsettled";

fn count(settled: &'static str, writes: usize) {
    if writes > 0 {
        metrics::counter!(IN_DOUBT_WRITES, "settled" => settled).increment(writes as u64);
    }
}

fn not_written() -> Error {
    Error::Unavailable("the database went away before the change was written".into())
}

/// One attempt: connects, fences, looks up; the command ids found.
async fn settle(url: &str, timeout: Duration, writes: &[Write]) -> Result<HashSet<String>, Error> {
    let mut connection: PgConnection = connect(url, timeout)
        .await
        .map_err(|e| classify("connecting to the database", e))?;
    let users: Vec<&str> = writes.iter().map(|w| w.user_id()).collect();
    let versions: Vec<i64> = writes.iter().map(|w| w.expected_version).collect();
    sqlx::query(FENCE)
        .bind(&users)
        .bind(&versions)
        .execute(&mut connection)
        .await
        .map_err(|e| classify("fencing in-doubt writes", e))?;
    // A write without events cannot be looked up; there is none today (every change appends
    // one), and such a write would count as not written.
    let sequences: Vec<i64> = writes
        .iter()
        .map(|w| w.rows.events.first().map_or(-1, |e| e.sequence))
        .collect();
    let ids: Vec<&str> = writes.iter().map(|w| w.rows.command_id.as_str()).collect();
    let found: Vec<String> = sqlx::query_scalar(LOOKUP)
        .bind(&users)
        .bind(&sequences)
        .bind(&ids)
        .fetch_all(&mut connection)
        .await
        .map_err(|e| classify("looking up in-doubt writes", e))?;
    Ok(found.into_iter().collect())
}
