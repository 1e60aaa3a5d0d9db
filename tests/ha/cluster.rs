//! The Patroni cluster of `scripts/ha-cluster.sh` (etcd, two Postgres nodes in synchronous mode,
//! HAProxy in front), one per test in a folder of its own, taken down when the test ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ha-cluster.sh");

pub struct Cluster {
    folder: tempfile::TempDir,
    /// Through HAProxy: always the current primary, when there is one.
    pub url: String,
}

impl Cluster {
    /// Starts a cluster and waits until it has a primary and a synchronous standby. A bring-up
    /// that fails is taken down before the test fails, so that nothing of it keeps running.
    pub async fn up() -> Cluster {
        let folder = tempfile::Builder::new()
            .prefix("totp-ha-")
            .tempdir()
            .unwrap();
        if let Err(failure) = try_run(folder.path(), "up").await {
            let _ = Command::new(SCRIPT)
                .args(["down", &folder.path().display().to_string()])
                .status();
            panic!("{failure}");
        }
        let env = std::fs::read_to_string(folder.path().join("env")).unwrap();
        let url = env
            .lines()
            .find_map(|line| line.strip_prefix("DATABASE_URL="))
            .expect("the script writes DATABASE_URL")
            .to_owned();
        Cluster { folder, url }
    }

    /// `kill -9` of the primary's postmaster; its node name.
    pub async fn kill_primary(&self) -> String {
        run(self.folder.path(), "kill-primary")
            .await
            .trim()
            .to_owned()
    }

    /// A planned switchover to the synchronous standby (returns once Patroni reports it done).
    pub async fn switchover(&self) {
        run(self.folder.path(), "switchover").await;
    }

    /// Every Postgres node down at once (Patroni paused so that none restarts).
    pub async fn stop_all(&self) {
        run(self.folder.path(), "stop-all").await;
    }

    /// The nodes started again and Patroni resumed.
    pub async fn start_all(&self) {
        run(self.folder.path(), "start-all").await;
    }

    /// Until a primary and a streaming synchronous standby are back (after a failover the old
    /// primary rejoins as the standby).
    pub async fn wait_healthy(&self) {
        run(self.folder.path(), "wait-healthy").await;
    }

    /// A connection to the primary through HAProxy.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Polls (every 20 ms, at most `limit`) until a fresh connection through HAProxy reaches a
    /// primary that accepts writes; when it did.
    pub async fn writable_at(&self, limit: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if let Ok(mut connection) = PgConnection::connect(&self.url).await {
                let primary: Result<bool, _> = sqlx::query_scalar("SELECT NOT pg_is_in_recovery()")
                    .fetch_one(&mut connection)
                    .await;
                if primary.unwrap_or(false) {
                    return Instant::now();
                }
            }
            assert!(
                started.elapsed() < limit,
                "no writable primary within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .args(["down", &self.folder.path().display().to_string()])
            .status();
    }
}

/// Runs one subcommand of the script on `folder` (off the async workers: some take seconds);
/// its standard output. Panics with its output when it fails.
async fn run(folder: &Path, subcommand: &'static str) -> String {
    try_run(folder, subcommand)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"))
}

/// [`run`], answering a failure with the script's output instead of panicking.
async fn try_run(folder: &Path, subcommand: &'static str) -> Result<String, String> {
    let folder = folder.display().to_string();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(SCRIPT)
            .args([subcommand, &folder])
            .output()
            .unwrap();
        if output.status.success() {
            Ok(String::from_utf8(output.stdout).unwrap())
        } else {
            Err(format!(
                "ha-cluster.sh {subcommand} failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    })
    .await
    .unwrap()
}
