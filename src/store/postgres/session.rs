//! The dedicated connections of the reader and writer tasks (native sqlx Postgres, for array
//! parameters), opened on first use and again after a failure.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::domain::error::Error;
use crate::store::classify;

/// The open connection, or a new one if there is none.
pub(super) async fn reconnect<'c>(
    connection: &'c mut Option<PgConnection>,
    url: &str,
    timeout: Duration,
) -> Result<&'c mut PgConnection, Error> {
    match connection {
        Some(open) => Ok(open),
        None => {
            let open = connect(url, timeout)
                .await
                .map_err(|e| classify("connecting to the database", e))?;
            Ok(connection.insert(open))
        }
    }
}

/// A connection for a writer or reader task. Its statements give up after `timeout` (a row lock
/// held by a foreign session would otherwise stall every write of this instance), failing only
/// their batch.
///
/// Its statements also keep one generic plan: with array parameters, Postgres would plan every
/// execution anew (see docs/performance.md). Every row they touch is found by primary key, so the
/// plan is index lookups whatever the arrays hold; sequential scans are ruled out because a plan
/// made while the tables are nearly empty (a fresh database) would scan them whole, and the
/// cached plan would keep doing so as they grow.
pub(super) async fn connect(url: &str, timeout: Duration) -> Result<PgConnection, sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    let millis = timeout.as_millis().max(1);
    for setting in [
        format!("SET statement_timeout = {millis}"),
        "SET plan_cache_mode = force_generic_plan".to_owned(),
        "SET enable_seqscan = off".to_owned(),
    ] {
        sqlx::Executor::execute(&mut connection, setting.as_str()).await?;
    }
    Ok(connection)
}
