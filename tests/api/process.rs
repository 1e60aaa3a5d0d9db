//! The real binary under what operators and attackers do to a whole process: its `--help`, the
//! refusal to start with an external JWKS and no audience, `/metrics` from the first scrape,
//! crowds of slow clients (connections and memory measured from `/proc`), and a database outage
//! cut through a TCP relay in front of the test's Postgres (what it logs, what clients see).

use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::binary::{Server, admin_token, read_log_until, serve, spawn_serve};
use crate::support::unique;
use totp_service::transport::auth::LocalSigningKey;

const BINARY: &str = env!("CARGO_BIN_EXE_totp-service");

#[test]
fn help_names_every_environment_variable() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config.rs")).unwrap();
    let mut names: Vec<&str> = source
        .split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(names.len() >= 20, "the settings were found: {names:?}");
    names.push("RUST_LOG");
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for name in names {
        assert!(help.contains(name), "--help does not name {name}:\n{help}");
    }
}

/// Runs `serve` with `env` until it exits or logs "serving"; whether it served, and its log.
fn start_or_refuse(data_dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let (mut process, mut stderr) = spawn_serve(data_dir, env);
    let mut log = String::new();
    let mut line = String::new();
    use std::io::BufRead;
    while stderr.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains("serving REST") {
            process.kill().unwrap();
            process.wait().unwrap();
            return (true, log);
        }
        line.clear();
    }
    let status = process.wait().unwrap();
    assert!(!status.success(), "a refusal exits with an error");
    (false, log)
}

#[test]
fn an_external_jwks_needs_an_audience_or_an_explicit_opt_out() {
    let data_dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let jwks = keys.path().join("jwks.json");
    let key = LocalSigningKey::load_or_create(keys.path()).unwrap();
    std::fs::write(&jwks, key.jwks_json().to_string()).unwrap();
    let jwks = jwks.display().to_string();

    let (served, log) = start_or_refuse(data_dir.path(), &[("TOTP_JWKS", &jwks)]);
    assert!(!served, "started without an audience:\n{log}");
    assert!(log.contains("TOTP_TOKEN_AUDIENCE"), "{log}");
    assert!(log.contains("TOTP_TOKEN_ANY_AUDIENCE"), "{log}");

    let (served, log) = start_or_refuse(
        data_dir.path(),
        &[("TOTP_JWKS", &jwks), ("TOTP_TOKEN_ANY_AUDIENCE", "true")],
    );
    assert!(served, "{log}");
    assert!(
        log.contains("WARN") && log.contains("TOTP_TOKEN_ANY_AUDIENCE is set"),
        "{log}"
    );

    let (served, log) = start_or_refuse(
        data_dir.path(),
        &[("TOTP_JWKS", &jwks), ("TOTP_TOKEN_AUDIENCE", "ours")],
    );
    assert!(served, "{log}");

    // In clear over a network, the keys could be swapped on the way.
    let (served, log) = start_or_refuse(
        data_dir.path(),
        &[
            ("TOTP_JWKS", "http://user:hunter2@idp.example/keys"),
            ("TOTP_TOKEN_AUDIENCE", "ours"),
        ],
    );
    assert!(!served);
    assert!(log.contains("https"), "{log}");
    assert!(
        !log.contains("hunter2"),
        "the URL's password is logged:\n{log}"
    );

    // Without TOTP_JWKS (the embedded default) nothing needs setting.
    let (served, log) = start_or_refuse(data_dir.path(), &[]);
    assert!(served, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_family_from_the_first_scrape() {
    // (On SQLite: the Postgres store's batch-size families are not this service's.)
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = serve(data_dir.path(), &[]);
    let text = reqwest::get(format!("http://{}/metrics", server.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.process.kill().unwrap();
    server.process.wait().unwrap();
    for (family, kind) in [
        ("totp_requests_total", "counter"),
        ("totp_request_duration_seconds", "histogram"),
        ("totp_code_outcomes_total", "counter"),
        ("totp_db_connections", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "HELP of {family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "TYPE of {family}:\n{text}"
        );
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// 150 connections that announce a 1 MiB body and send half of it, and 150 that send headers
/// without their end: every one is closed within the timeouts, the service's memory stays
/// bounded, and it answers others meanwhile. Prints what it measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowds_of_slow_clients_hold_neither_connections_nor_memory() {
    const EACH: usize = 150;
    let data_dir = tempfile::tempdir().unwrap();
    let Server {
        mut process,
        address,
        mut stderr,
        ..
    } = serve(
        data_dir.path(),
        &[
            ("TOTP_HEADER_READ_TIMEOUT", "2s"),
            ("TOTP_BODY_READ_TIMEOUT", "2s"),
        ],
    );
    let pid = process.id();
    // Its log is read as it comes: a full pipe would stall the server.
    let log_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });
    let (rss_before, _) = memory_mib(pid);
    let started = Instant::now();
    let mut clients = Vec::new();
    for index in 0..2 * EACH {
        let address = address.clone();
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            if index % 2 == 0 {
                let head = "POST /v2/users/human HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
                stream.write_all(head.as_bytes()).await.unwrap();
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..8 {
                    if stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            } else {
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await
                    .unwrap();
            }
            let mut answer = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                    .await
                    .is_ok();
            (index % 2, closed, started.elapsed())
        }));
    }
    // While they wait: the peak of memory, and a request of an ordinary client.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (rss_during, _) = memory_mib(pid);
    let healthy = reqwest::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    let mut slowest = Duration::ZERO;
    for client in clients {
        let (kind, closed, after) = client.await.unwrap();
        let kind = ["slow body", "unfinished headers"][kind];
        assert!(
            closed,
            "a connection with a {kind} was left open after {after:?}"
        );
        slowest = slowest.max(after);
    }
    let (rss_after, peak) = memory_mib(pid);
    eprintln!(
        "slow clients: {EACH} slow bodies + {EACH} unfinished headers, timeouts 2 s: all closed \
         within {slowest:.1?}; RSS {rss_before:.1} MiB before, {rss_during:.1} during, \
         {rss_after:.1} after, peak {peak:.1} MiB"
    );
    process.kill().unwrap();
    process.wait().unwrap();
    log_reader.join().unwrap();
    assert!(slowest < Duration::from_secs(5), "closed after {slowest:?}");
    assert!(peak < 100.0, "peak RSS {peak:.1} MiB");
}

/// A TCP relay to `upstream` that can be cut (every relayed connection closed, new ones closed
/// at once) and restored: a database that vanishes from the network and comes back.
struct Relay {
    address: String,
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let relay = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    tokio::select! {
                        _ = relay => {}
                        () = cut => {}
                    }
                });
            }
        });
        Relay { address, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_logged_once_when_it_begins_and_once_when_it_ends() {
    let database = url::Url::parse(&crate::support::fresh_database().await).unwrap();
    let upstream = format!(
        "{}:{}",
        database.host_str().unwrap(),
        database.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    let mut through_relay = database.clone();
    let (host, port) = relay.address.split_once(':').unwrap();
    through_relay.set_host(Some(host)).unwrap();
    through_relay.set_port(Some(port.parse().unwrap())).unwrap();

    let data_dir = tempfile::tempdir().unwrap();
    let Server {
        mut process,
        address,
        mut stderr,
        ..
    } = serve(
        data_dir.path(),
        &[
            ("DATABASE_URL", through_relay.as_str()),
            (
                "TOTP_ENCRYPTION_KEYS",
                "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("TOTP_REQUEST_TIMEOUT", "3s"),
        ],
    );
    let token = admin_token(data_dir.path(), &["user.write", "user.read"]);
    let http = reqwest::Client::new();
    let user_id = unique("outage");
    let added = http
        .post(format!("http://{address}/v2/users/human"))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({"userId": user_id, "organization": {"orgId": "acme"},
            "profile": {"givenName": "A", "familyName": "B"}, "email": {"email": "a@example.com"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let get = || {
        http.get(format!("http://{address}/v2/users/{user_id}"))
            .bearer_auth(&token)
            .send()
    };

    relay.cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    const REFUSED: usize = 40;
    for _ in 0..REFUSED {
        let response = get().await.unwrap();
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], 14, "{body}");
    }
    relay.cut.store(false, Ordering::SeqCst);
    let back = Instant::now();
    loop {
        let response = get().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(back.elapsed() < Duration::from_secs(15), "never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (log, line) = read_log_until(&mut stderr, "database reachable again");
    assert_eq!(
        log.matches("database unreachable").count(),
        1,
        "one line when the outage began:\n{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("\"ERROR\"")).count(),
        1,
        "no error line per refused request:\n{log}"
    );
    process.kill().unwrap();
    process.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let refused: serde_json::Value = serde_json::from_str(&line).unwrap();
    let counted = refused["fields"]["refused"].as_u64().unwrap() as usize;
    assert!(counted >= REFUSED, "{line}");
    let errors: Vec<&str> = rest.lines().filter(|l| l.contains("\"ERROR\"")).collect();
    assert!(
        errors.is_empty(),
        "more error lines after the outage: {errors:?}"
    );
}
