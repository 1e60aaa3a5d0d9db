//! The container image as operators get it: built from the Dockerfile (its runtime stage, filled
//! with the host's release binary: this machine kind cannot fetch the Rust image) with podman, and
//! run against the suite's throwaway Postgres with a data volume and `TOTP_ENCRYPTION_KEYS`. It
//! runs as a non-root user, its HEALTHCHECK turns healthy, the README's walk-through works over
//! REST and gRPC, a new container on the same volume keeps its keys, and `podman stop` drains and
//! exits 0.
//!
//! Run by `scripts/image-test.sh` (from `scripts/test.sh`), which installs podman and makes the
//! Debian base image: `cargo test --features image-tests --test image`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use totp_client::calls::{Client, Protocol};
use totp_service::domain::totp::{self, Algorithm, Secret};
use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::object::v2 as object_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

const IMAGE: &str = "localhost/totp-service:test";
const KEYS: &str = "image:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_unprivileged_turns_healthy_serves_keeps_its_keys_and_stops_cleanly() {
    let started = Instant::now();
    build_image();
    let built = started.elapsed();
    let size: u64 = podman(&["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .trim()
        .parse()
        .unwrap();
    println!("image built in {built:.1?}, {:.1} MB", size as f64 / 1e6);

    let database = Database::create().await;
    let volume = format!("totp-image-test-{}", std::process::id());
    podman(&["volume", "create", &volume]);
    let _cleanup = Cleanup {
        volume: volume.clone(),
    };

    // First life of the container.
    let port = free_port();
    let first = Container::run(&volume, &database.url, port);
    let healthy = first.wait_healthy();
    println!("healthy {healthy:.1?} after start");
    assert_eq!(
        first.exec(&["id", "-u"]).trim(),
        "10001",
        "runs as the image's user"
    );
    assert_eq!(
        podman(&["inspect", "--format", "{{.Config.User}}", &first.name]).trim(),
        "totp"
    );
    let token = first
        .exec(&[
            "totp-service",
            "token",
            "--sub",
            "admin",
            "--grant",
            "user.write@*",
            "--grant",
            "user.read@*",
            "--grant",
            "user.credential.write@*",
            "--grant",
            "session.write@*",
        ])
        .trim()
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let bearer = format!("Bearer {token}");
    let alice_secret = walk_through(&client(Protocol::Rest, &base).await, &bearer, "alice").await;
    walk_through(&client(Protocol::Grpc, &base).await, &bearer, "bob").await;
    let stopping = Instant::now();
    first.stop_and_assert_clean_exit();
    println!("stopped in {:.1?}, exit code 0", stopping.elapsed());
    drop(first);

    // A new container on the same volume: the token signed with the key in the volume is still
    // good, and the secret sealed before opens (a code check succeeds).
    let port = free_port();
    let second = Container::run(&volume, &database.url, port);
    second.wait_healthy();
    let base = format!("http://127.0.0.1:{port}");
    let rest = client(Protocol::Rest, &base).await;
    rest.call(
        Some(&bearer),
        totp_pb::CheckTotpRequest {
            user_id: "alice".into(),
            code: code(&alice_secret, now_step() + 1),
        },
    )
    .await
    .expect("check after the restart");
    second.stop_and_assert_clean_exit();
    println!("whole test in {:.1?}", started.elapsed());
    database.drop_it().await;
}

async fn client(protocol: Protocol, base: &str) -> Client {
    Client::connect(protocol, base, reqwest::Client::new(), 1)
        .await
        .expect("the container accepts connections")
}

/// AddHumanUser, RegisterTOTP, VerifyTOTPRegistration and CheckTOTP, as the README's
/// walk-through does them; the secret.
async fn walk_through(client: &Client, bearer: &str, user: &str) -> Secret {
    let protocol = client.protocol();
    let added = client
        .call(
            Some(bearer),
            user_pb::AddHumanUserRequest {
                user_id: Some(user.into()),
                organization: Some(object_pb::Organization {
                    org: Some(object_pb::organization::Org::OrgId("acme".into())),
                }),
                profile: Some(user_pb::SetHumanProfile {
                    given_name: "Alice".into(),
                    family_name: "Smith".into(),
                    ..Default::default()
                }),
                email: Some(user_pb::SetHumanEmail {
                    email: format!("{user}@example.com"),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("AddHumanUser over {protocol:?}: {e:?}"));
    assert_eq!(added.user_id, user);
    let registered = client
        .call(
            Some(bearer),
            user_pb::RegisterTotpRequest {
                user_id: user.into(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("RegisterTOTP over {protocol:?}: {e:?}"));
    assert!(registered.uri.starts_with("otpauth://totp/"));
    let secret = Secret::from_base32(&registered.secret).expect("a base32 secret");
    client
        .call(
            Some(bearer),
            user_pb::VerifyTotpRegistrationRequest {
                user_id: user.into(),
                code: code(&secret, now_step() - 1),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("VerifyTOTPRegistration over {protocol:?}: {e:?}"));
    client
        .call(
            Some(bearer),
            totp_pb::CheckTotpRequest {
                user_id: user.into(),
                code: code(&secret, now_step()),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("CheckTOTP over {protocol:?}: {e:?}"));
    secret
}

fn now_step() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp::step_at(seconds as i64, totp::PERIOD)
}

fn code(secret: &Secret, step: i64) -> String {
    totp::code_for_step(secret, step, totp::DIGITS, Algorithm::Sha1)
}

/// Builds the image from the Dockerfile's runtime stage, with the release binary as its only
/// content from this repository.
fn build_image() {
    let binary = std::env::var("TOTP_IMAGE_BINARY").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/totp-service").to_owned()
    });
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, context.path().join("totp-service"))
        .unwrap_or_else(|e| panic!("{binary}: {e} (build it with cargo build --release)"));
    podman(&[
        "build",
        "--format",
        "docker",
        "--build-arg",
        "BINARY_FROM=prebuilt",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"),
        "-t",
        IMAGE,
        &context.path().display().to_string(),
    ]);
}

/// Runs podman with the runtime settings of this machine kind (runc, cgroupfs); its standard
/// output. Panics with its output when it fails.
fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .output()
        .expect("podman runs (scripts/image-test.sh installs it)");
    assert!(
        output.status.success(),
        "podman {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

struct Container {
    name: String,
}

impl Container {
    /// Starts the image on the host's network (the throwaway Postgres listens on loopback).
    fn run(volume: &str, database_url: &str, port: u16) -> Container {
        let name = format!("totp-image-test-{}-{port}", std::process::id());
        podman(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "host",
            "--volume",
            &format!("{volume}:/data"),
            "--env",
            &format!("DATABASE_URL={database_url}"),
            "--env",
            &format!("TOTP_ENCRYPTION_KEYS={KEYS}"),
            "--env",
            &format!("TOTP_LISTEN=127.0.0.1:{port}"),
            IMAGE,
        ]);
        Container { name }
    }

    /// Runs the image's HEALTHCHECK until it passes (at most 60 s); how long that took.
    fn wait_healthy(&self) -> Duration {
        let started = Instant::now();
        loop {
            let status = Command::new("podman")
                .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
                .args(["healthcheck", "run", &self.name])
                .output()
                .unwrap()
                .status;
            if status.success() {
                let health = podman(&[
                    "inspect",
                    "--format",
                    "{{.State.Health.Status}}",
                    &self.name,
                ]);
                assert_eq!(health.trim(), "healthy");
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not healthy after 60 s; its log:\n{}",
                podman(&["logs", &self.name])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a program in the container (no shell: the image needs none).
    fn exec(&self, command: &[&str]) -> String {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(command);
        podman(&args)
    }

    /// `podman stop` (SIGTERM): the service drains and exits with 0.
    fn stop_and_assert_clean_exit(&self) {
        podman(&["stop", "--time", "30", &self.name]);
        let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        assert_eq!(code.trim(), "0", "exit code after podman stop");
        let log = Command::new("podman")
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "logs",
                &self.name,
            ])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&log.stderr).into_owned()
            + &String::from_utf8_lossy(&log.stdout);
        assert!(
            log.contains("shutting down") && log.contains("stopped"),
            "{log}"
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "rm",
                "--force",
                &self.name,
            ])
            .output();
    }
}

/// Removes the test's volume at the end.
struct Cleanup {
    volume: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["volume", "rm", "--force", &self.volume])
            .output();
    }
}

/// A database of the test's own on the suite's Postgres (`DATABASE_URL`).
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Database {
        let admin = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL: the image test runs against the suite's Postgres (scripts/test.sh)",
        );
        let name = format!("image_test_{}", std::process::id());
        let mut connection = PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Database {
            admin,
            name,
            url: url.to_string(),
        }
    }

    async fn drop_it(self) {
        let mut connection = PgConnection::connect(&self.admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut connection)
            .await
            .unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
