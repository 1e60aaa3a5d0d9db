//! The container image as operators get it: built from the Dockerfile (its runtime stage, filled
//! with the host's release binary: this machine kind cannot fetch the Rust image) with podman, and
//! run against the suite's throwaway Postgres with a data volume and `TOTP_ENCRYPTION_KEYS`. It
//! runs as a non-root user, its HEALTHCHECK turns healthy, the README's walk-through works over
//! REST and gRPC, a new container on the same volume keeps its keys, and `podman stop` drains and
//! exits 0. And `compose.yaml`, run by `podman-compose` as a user would.
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
const POSTGRES_IMAGE: &str = "localhost/postgres-debian:15";
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
    Client::connect(protocol, base, 1)
        .await
        .expect("the container accepts connections")
}

/// compose.yaml as users run it (`podman-compose`, Debian's package): the service image and a
/// Postgres (built from Debian's packages with the official image's settings: Docker Hub is out
/// of reach here) on compose's own network, the keys from an env file, the named volumes. The
/// service turns healthy after Postgres, serves the walk-through on the published port, and
/// `down -v` removes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_yaml_runs_the_service_with_its_postgres() {
    let started = Instant::now();
    build_image();
    podman(&["tag", IMAGE, "localhost/totp-service:latest"]);
    podman(&[
        "build",
        "--network",
        "host",
        "-t",
        POSTGRES_IMAGE,
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/image/postgres"),
    ]);
    println!("images ready in {:.1?}", started.elapsed());

    // compose.yaml and its env file in a folder of their own, as a user would have them.
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"),
        folder.path().join("compose.yaml"),
    )
    .unwrap();
    std::fs::write(
        folder.path().join("totp.env"),
        format!("TOTP_ENCRYPTION_KEYS={KEYS}\n"),
    )
    .unwrap();
    let port = free_port();
    let project = Compose {
        name: format!("totpcompose{}", std::process::id()),
        folder,
        port,
    };
    let up = Instant::now();
    project.run(&["up", "-d"]).unwrap();
    let totp = format!("{}_totp_1", project.name);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|answer| answer.status() == 200) {
            break;
        }
        assert!(
            up.elapsed() < Duration::from_secs(120),
            "not ready after 120 s; its log:\n{}",
            podman(&["logs", &totp])
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("compose up: ready in {:.1?}", up.elapsed());
    let token = podman(&[
        "exec",
        &totp,
        "totp-service",
        "token",
        "--sub",
        "admin",
        "--grant",
        "user.write@*",
        "--grant",
        "user.credential.write@*",
        "--grant",
        "session.write@*",
    ]);
    let bearer = format!("Bearer {}", token.trim());
    walk_through(&client(Protocol::Rest, &base).await, &bearer, "carol").await;
    let database_url = podman(&["exec", &totp, "printenv", "DATABASE_URL"]);
    assert!(
        database_url.contains("@postgres:5432/totp"),
        "the service uses compose's Postgres: {database_url}"
    );
    project.run(&["down", "-v"]).unwrap();
    let left = podman(&[
        "ps",
        "--all",
        "--filter",
        &format!("name={}", project.name),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left.trim(), "", "down -v removes the containers");
    let volumes = podman(&["volume", "ls", "--format", "{{.Name}}"]);
    assert!(
        !volumes.contains(&project.name),
        "down -v removes the volumes: {volumes}"
    );
    println!("whole compose test in {:.1?}", started.elapsed());
}

/// A compose project of the test; `down -v` when dropped (containers, network and volumes go).
struct Compose {
    name: String,
    folder: tempfile::TempDir,
    port: u16,
}

impl Compose {
    /// Runs `podman-compose <args>` in the project's folder; its output when it fails.
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new("podman-compose")
            .args(["--project-name", &self.name])
            .args(args)
            .current_dir(self.folder.path())
            .env("POSTGRES_PASSWORD", "compose-test-password")
            .env("POSTGRES_IMAGE", POSTGRES_IMAGE)
            .env("TOTP_PORT", self.port.to_string())
            .output()
            .expect("podman-compose runs (scripts/image-test.sh installs it)");
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "podman-compose {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v"]);
    }
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
