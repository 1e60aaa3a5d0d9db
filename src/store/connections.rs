//! A small connection pool for the request path, and the storage tasks that run on it
//! ([`to_the_end`]: bounded in number, finished once started, dropped unrun when their request
//! stopped waiting first), with the pooled operations both stores share.
//!
//! sqlx's own pool tests every connection handed back with a ping, a database round trip per
//! request that our commands do not need: storage work always runs to its end once started, every transaction is committed or rolled back explicitly, and a
//! connection that saw a database error is dropped instead of reused. So a connection comes
//! back in a known state, and the pool just keeps it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{classify, rows};
use crate::domain::error::{self, Error};
use crate::domain::store::ConnectionStats;

tokio::task_local! {
    /// In a storage task (see [`to_the_end`]): whether its request has stopped waiting.
    static CALLER_GONE: Arc<AtomicBool>;
}

/// Up to `max` open connections to one database.
#[derive(Debug)]
pub struct Connections {
    url: String,
    /// Statements run on every new connection (SQLite's settings).
    setup: &'static [&'static str],
    idle: Mutex<Vec<AnyConnection>>,
    /// One permit per connection that may be open; a lease holds one.
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
    closed: AtomicBool,
}

/// A connection on loan from [`Connections`]; it goes back when the lease is dropped, unless
/// [`Lease::discard`] was called.
pub struct Lease<'pool> {
    connection: Option<AnyConnection>,
    home: &'pool Connections,
    _permit: OwnedSemaphorePermit,
}

impl Connections {
    /// Opens one connection to check that the database answers; it stays idle in the pool. Every
    /// new connection runs `setup` first.
    pub async fn open(
        url: &str,
        setup: &'static [&'static str],
        max: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let first = connect(url, setup).await?;
        Ok(Connections {
            url: url.to_owned(),
            setup,
            idle: Mutex::new(vec![first]),
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            acquire_timeout,
            closed: AtomicBool::new(false),
        })
    }

    /// An idle connection, or a new one when none is idle and fewer than `max` are open; waits
    /// up to the acquire timeout for one to come back.
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
        if self.closed.load(Ordering::SeqCst) {
            return Err(sqlx::Error::PoolClosed);
        }
        let idle = self.idle.lock().expect("pool lock").pop();
        let connection = match idle {
            Some(connection) => connection,
            None => connect(&self.url, self.setup).await?,
        };
        Ok(Lease {
            connection: Some(connection),
            home: self,
            _permit: permit,
        })
    }

    /// Runs `work` on a pooled connection. After a database failure the connection's state is
    /// unknown (a half-read answer, an open transaction), so it is dropped instead of reused; a
    /// domain refusal leaves it clean. Work of a storage task whose request stopped waiting while
    /// it waited for the connection is not run (code 4, which nobody reads).
    pub async fn with<T>(
        &self,
        work: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut lease = self
            .acquire()
            .await
            .map_err(|e| classify("taking a database connection", e))?;
        let abandoned = CALLER_GONE
            .try_with(|gone| gone.load(Ordering::Relaxed))
            .unwrap_or(false);
        if abandoned {
            return Err(error::TOO_SLOW.into());
        }
        let result = work(lease.connection()).await;
        if result.as_ref().is_err_and(Error::is_server_fault) {
            lease.discard();
        }
        result
    }

    /// Connections in use and idle.
    pub fn stats(&self) -> ConnectionStats {
        let idle = self.idle.lock().expect("pool lock").len() as u32;
        let in_use = self.max - self.permits.available_permits() as u32;
        ConnectionStats { in_use, idle }
    }

    /// Refuses further leases and closes the idle connections (the leased ones close when their
    /// lease ends).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().expect("pool lock"));
        for connection in idle {
            let _ = connection.close().await;
        }
    }
}

impl Lease<'_> {
    /// The connection, for running statements on.
    pub fn connection(&mut self) -> &mut AnyConnection {
        self.connection
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    /// Drops the connection instead of returning it (after an error: its state is unknown).
    pub fn discard(mut self) {
        self.connection = None;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !self.home.closed.load(Ordering::SeqCst)
        {
            self.home.idle.lock().expect("pool lock").push(connection);
        }
    }
}

/// A new connection, set up.
async fn connect(url: &str, setup: &[&str]) -> Result<AnyConnection, sqlx::Error> {
    let mut connection = AnyConnection::connect(url).await?;
    for statement in setup {
        connection.execute(*statement).await?;
    }
    Ok(connection)
}

/// Runs `work` in a task of its own, which goes on to its end when the caller stops waiting: a
/// driver interrupted between sending a statement and reading its answer can leave a connection
/// inside a transaction, holding locks (SQLite's write lock blocks every writer), and a SQLite
/// command leading a group commit writes for the others too. Work whose caller has stopped
/// waiting before it got a connection is dropped unrun (see [`Connections::with`]). When
/// `admitted` has no place left, the work is refused at once (code 8) instead of queueing
/// without bound.
pub(super) async fn to_the_end<T: Send + 'static>(
    admitted: &Arc<Semaphore>,
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    let place = admitted
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Rejected(error::OVERLOADED))?;
    let abandoned = Arc::new(AtomicBool::new(false));
    // Dropped with this future: when the caller stops waiting, or once the work is done.
    let _caller = Waiting(abandoned.clone());
    tokio::spawn(CALLER_GONE.scope(abandoned, async move {
        let _place = place;
        work.await
    }))
    .await
    .map_err(|failed| Error::Internal(format!("storage task failed: {failed}")))?
}

/// Marks the work of [`to_the_end`] abandoned when the caller's future is dropped.
struct Waiting(Arc<AtomicBool>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The ids of users whose secret is sealed under another key than `key_id` (see
/// `Store::totp_sealed_with_other_key`), read on the pool in a task of its own.
pub(super) async fn totp_sealed_with_other_key(
    connections: &Arc<Connections>,
    admitted: &Arc<Semaphore>,
    key_id: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, Error> {
    let connections = connections.clone();
    let (key_id, after) = (key_id.to_owned(), after.to_owned());
    to_the_end(admitted, async move {
        connections
            .with(async |conn| rows::totp_sealed_with_other_key(conn, &key_id, &after, limit).await)
            .await
    })
    .await
}

/// Whether the database answers, asked on the pool in a task of its own.
pub(super) async fn ping(
    connections: &Arc<Connections>,
    admitted: &Arc<Semaphore>,
) -> Result<(), Error> {
    let connections = connections.clone();
    to_the_end(admitted, async move {
        connections.with(async |conn| rows::ping(conn).await).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A request that stops waiting while its storage work waits for a connection: the work is
    /// dropped unrun; one still waiting when the connection comes back runs.
    #[tokio::test]
    async fn work_whose_request_stopped_waiting_is_dropped_before_it_runs() {
        sqlx::any::install_default_drivers();
        let pool = Arc::new(
            Connections::open("sqlite::memory:", &[], 1, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let admitted = Arc::new(Semaphore::new(8));
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |pool: Arc<Connections>, runs: Arc<AtomicUsize>| async move {
            pool.with(async |_| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
        };
        let held = pool.acquire().await.unwrap();
        let impatient = tokio::time::timeout(
            Duration::from_millis(50),
            to_the_end(&admitted, work(pool.clone(), runs.clone())),
        );
        assert!(impatient.await.is_err(), "the request gave up waiting");
        let patient = tokio::spawn({
            let (admitted, pool, runs) = (admitted.clone(), pool.clone(), runs.clone());
            async move { to_the_end(&admitted, work(pool, runs)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        patient.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "only the waiting request's work ran"
        );
    }
}
