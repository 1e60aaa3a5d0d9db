//! Runs the real `totp-service` binary for the tests that need a whole process (logs, signals):
//! `serve` on SQLite in a data folder, and `token` for that folder's local key.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_totp-service");

/// A running `serve` process.
pub struct Server {
    pub process: Child,
    /// `host:port` it listens on.
    pub address: String,
    /// Its log (JSON lines), from the line after "serving".
    pub stderr: BufReader<ChildStderr>,
    /// What it logged up to and including the "serving" line.
    pub startup_log: String,
}

/// Starts `serve` on SQLite in `data_dir` with JSON logs, port 0 and `env` added, and waits
/// until it listens.
pub fn serve(data_dir: &Path, env: &[(&str, &str)]) -> Server {
    let (process, mut stderr) = spawn_serve(data_dir, env);
    let (startup_log, serving) = read_log_until(&mut stderr, "serving REST");
    let json: serde_json::Value = serde_json::from_str(&serving).unwrap();
    let address = json["fields"]["address"].as_str().unwrap().to_owned();
    Server {
        process,
        address,
        stderr,
        startup_log,
    }
}

/// Starts `serve` like [`serve`] but returns at once, with the log still to be read.
// The process is handed to the caller, who stops and waits for it.
#[allow(clippy::zombie_processes)]
pub fn spawn_serve(data_dir: &Path, env: &[(&str, &str)]) -> (Child, BufReader<ChildStderr>) {
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .env("TOTP_DATA_DIR", data_dir)
        .env("TOTP_LISTEN", "127.0.0.1:0")
        .env("TOTP_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .env_remove("TOTP_JWKS")
        .env_remove("TOTP_ENCRYPTION_KEYS")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut process = command.spawn().expect("server starts");
    let stderr = BufReader::new(process.stderr.take().unwrap());
    (process, stderr)
}

/// Reads log lines until one contains `needle`; returns everything read and that line.
/// Panics, showing the log, when the process ends first.
pub fn read_log_until(stderr: &mut BufReader<ChildStderr>, needle: &str) -> (String, String) {
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before logging {needle:?}:\n{log}"
        );
        log.push_str(&line);
        if line.contains(needle) {
            return (log, line);
        }
    }
}

/// A token from the local key of `data_dir` for `admin` with each permission in every org.
pub fn admin_token(data_dir: &Path, permissions: &[&str]) -> String {
    let mut command = Command::new(BINARY);
    command
        .args(["token", "--sub", "admin"])
        .env("TOTP_DATA_DIR", data_dir)
        .env_remove("TOTP_JWKS");
    for permission in permissions {
        command.args(["--grant", &format!("{permission}@*")]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
