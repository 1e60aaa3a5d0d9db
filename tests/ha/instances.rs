//! Two (or more) real `totp-service` processes on one database, as operators run replicas: one
//! data folder for the token signing key, one encryption key for both, logs to files.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_totp-service");

/// Wrong codes before a user is locked: small, so that lives reach the lock quickly.
pub const MAX_ATTEMPTS: u32 = 3;
/// Longest a command may take before the service gives up on it (its default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Instance {
    process: Child,
    /// `http://host:port`.
    pub base: String,
    log: PathBuf,
}

pub struct Instances {
    pub list: Vec<Instance>,
    /// A token with every permission the load needs.
    pub token: String,
    /// Holds the signing key and the logs; removed with the instances.
    _data_dir: tempfile::TempDir,
}

impl Instances {
    /// Starts `count` instances on `database_url`, one after the other.
    pub fn start(count: usize, database_url: &str) -> Instances {
        let data_dir = tempfile::tempdir().unwrap();
        // One fixed key (32 bytes, base64) so that what one instance seals the other opens.
        let keys = "ha:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let list = (0..count)
            .map(|index| {
                let log = data_dir.path().join(format!("instance-{index}.log"));
                let process = Command::new(BINARY)
                    .arg("serve")
                    .env("DATABASE_URL", database_url)
                    .env("TOTP_DATA_DIR", data_dir.path())
                    .env("TOTP_LISTEN", "127.0.0.1:0")
                    .env("TOTP_LOG_FORMAT", "json")
                    .env("TOTP_ENCRYPTION_KEYS", keys)
                    .env("TOTP_MAX_ATTEMPTS", MAX_ATTEMPTS.to_string())
                    .env("TOTP_LOCKOUT_DURATION", "1h")
                    .env(
                        "TOTP_REQUEST_TIMEOUT",
                        format!("{}s", REQUEST_TIMEOUT.as_secs()),
                    )
                    .env_remove("TOTP_JWKS")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap();
                let address = wait_for_address(&log);
                Instance {
                    process,
                    base: format!("http://{address}"),
                    log,
                }
            })
            .collect();
        let token = token(data_dir.path());
        Instances {
            list,
            token,
            _data_dir: data_dir,
        }
    }

    pub fn bases(&self) -> Vec<String> {
        self.list.iter().map(|i| i.base.clone()).collect()
    }

    /// `kill -9` of instance `index`.
    pub fn kill(&mut self, index: usize) {
        let instance = &mut self.list[index];
        instance.process.kill().unwrap();
        instance.process.wait().unwrap();
    }

    /// The samples of metric family `name` on instance `index`'s `/metrics`, as text lines.
    pub async fn samples(&self, index: usize, name: &str) -> Vec<String> {
        let text = reqwest::get(format!("{}/metrics", self.list[index].base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with(name))
            .map(str::to_owned)
            .collect()
    }

    /// The lines instance `index` logged at level WARN or ERROR so far.
    pub fn warnings_and_errors(&self, index: usize) -> Vec<String> {
        std::fs::read_to_string(&self.list[index].log)
            .unwrap()
            .lines()
            .filter(|line| {
                line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        for instance in &mut self.list {
            let _ = instance.process.kill();
            let _ = instance.process.wait();
        }
    }
}

/// Reads the log until the "serving" line and returns the address it names (at most 60 s: the
/// service waits for its database first).
fn wait_for_address(log: &std::path::Path) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("serving REST")) {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            return json["fields"]["address"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the service did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token from the shared data folder's key, for an administrator of every organisation.
fn token(data_dir: &std::path::Path) -> String {
    let mut command = Command::new(BINARY);
    command
        .args(["token", "--sub", "ha-admin"])
        .env("TOTP_DATA_DIR", data_dir)
        .env_remove("TOTP_JWKS");
    for permission in [
        "user.write",
        "user.read",
        "user.credential.write",
        "session.write",
    ] {
        command.args(["--grant", &format!("{permission}@*")]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
