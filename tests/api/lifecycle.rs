//! The binary's life: SIGTERM during a burst of requests loses none of them (every request the
//! service answered is answered completely, every acknowledged write is stored, and no request
//! that failed to connect left a trace); `/readyz` turns false while draining; start-up waits for
//! a database that is not up yet.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::binary::{admin_token, read_log_until, serve, spawn_serve};
use crate::support::unique;
use totp_service::domain::clock::{Clock, SystemClock};
use totp_service::domain::totp::{self, Algorithm, Secret};

/// Keeps reading a server's log so it never blocks on a full pipe.
fn drain(mut stderr: std::io::BufReader<std::process::ChildStderr>) {
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
}

fn current_code(secret: &str) -> String {
    let secret = Secret::from_base32(secret).unwrap();
    let step = totp::step_at(SystemClock.now().unix_seconds(), totp::PERIOD);
    totp::code_for_step(&secret, step, totp::DIGITS, Algorithm::Sha1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_loses_no_request() {
    let data_dir = tempfile::tempdir().unwrap();
    let started = serve(data_dir.path(), &[("TOTP_SHUTDOWN_GRACE", "10s")]);
    let (mut server, address) = (started.process, started.address);
    drain(started.stderr);
    let token = admin_token(
        data_dir.path(),
        &["user.write", "user.read", "session.write"],
    );
    let http = reqwest::Client::new();
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    // 400 users with a ready TOTP; each will be checked once.
    let users: Vec<String> = (0..400).map(|_| unique("burst")).collect();
    for user in &users {
        let body = format!(
            r#"{{"userId":"{user}","organization":{{"orgId":"acme"}},"profile":{{"givenName":"A","familyName":"B"}},"email":{{"email":"b@example.com"}},"totpSecret":"{secret}"}}"#
        );
        let response = http
            .post(format!("http://{address}/v2/users/human"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // 16 workers check one user after another; SIGTERM arrives in the middle.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let users = Arc::new(users);
    let mut workers = JoinSet::new();
    for _ in 0..16 {
        let (http, address, token, next, users) = (
            http.clone(),
            address.clone(),
            token.clone(),
            next.clone(),
            users.clone(),
        );
        workers.spawn(async move {
            let mut answered = vec![];
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(user) = users.get(index) else {
                    return answered;
                };
                let sent = http
                    .post(format!("http://{address}/v2/users/{user}/totp/check"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"code":"{}"}}"#, current_code(secret)))
                    .send()
                    .await;
                match sent {
                    // Answered: the answer must be whole, and a success.
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response
                            .text()
                            .await
                            .expect("an answered request is answered in full");
                        answered.push((index, status, body));
                    }
                    // Not taken any more: the service is going away.
                    Err(_) => return answered,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut answered = vec![];
    while let Some(done) = workers.join_next().await {
        answered.extend(done.unwrap());
    }
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    assert!(
        !answered.is_empty(),
        "some requests were answered before the signal"
    );
    assert!(
        answered.len() < users.len(),
        "the signal came during the burst"
    );
    for (index, status, body) in &answered {
        assert_eq!(*status, 200, "request {index}: {body}");
    }

    // After a restart: exactly the answered checks are stored, and nothing else.
    let restart = serve(data_dir.path(), &[]);
    let (mut restarted, address) = (restart.process, restart.address);
    drain(restart.stderr);
    let answered_users: std::collections::HashSet<usize> =
        answered.iter().map(|(i, _, _)| *i).collect();
    for (index, user) in users.iter().enumerate() {
        let shown: serde_json::Value = http
            .get(format!("http://{address}/v2/users/{user}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sequence = shown["details"]["sequence"].as_str().unwrap();
        let expected = if answered_users.contains(&index) {
            "4"
        } else {
            "3"
        };
        assert_eq!(
            sequence,
            expected,
            "user {index}: answered = {}",
            answered_users.contains(&index)
        );
    }
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_while_draining_and_requests_are_still_served() {
    let data_dir = tempfile::tempdir().unwrap();
    let started = serve(data_dir.path(), &[("TOTP_DRAIN_DELAY", "2s")]);
    let (mut server, address) = (started.process, started.address);
    drain(started.stderr);
    let token = admin_token(data_dir.path(), &["user.read"]);
    // No connection reuse: every probe is a new connection, as a load balancer's would be.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = |http: reqwest::Client| {
        let url = format!("http://{address}/readyz");
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ready(http.clone()).await, 200);

    let signalled = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while ready(http.clone()).await != 503 {
        assert!(
            signalled.elapsed() < Duration::from_millis(1500),
            "/readyz still 200 long after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not ready, but still answering API calls on new connections.
    let response = http
        .get(format!("http://{address}/v2/users/nobody"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 5);

    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "the drain delay was kept"
    );
    assert!(
        http.get(format!("http://{address}/healthz"))
            .send()
            .await
            .is_err(),
        "nothing listens after the exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_waits_for_a_database_that_is_not_up_yet() {
    let real = reqwest::Url::parse(&crate::support::fresh_database().await).unwrap();
    let real_address = format!(
        "{}:{}",
        real.host_str().unwrap(),
        real.port().unwrap_or(5432)
    );
    // The database will appear on a port where nothing listens yet. The password is not needed
    // by the test cluster; it is there to prove the retry log line redacts it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut late = real.clone();
    late.set_host(Some("127.0.0.1")).unwrap();
    late.set_port(Some(port)).unwrap();
    late.set_password(Some("hunter2-not-logged")).unwrap();

    let data_dir = tempfile::tempdir().unwrap();
    let (mut server, mut stderr) = spawn_serve(
        data_dir.path(),
        &[("DATABASE_URL", late.as_str()), ("TOTP_DB_WAIT", "60s")],
    );
    let (mut stderr, waiting) = tokio::task::spawn_blocking(move || {
        let (_, line) = read_log_until(&mut stderr, "database not reachable yet");
        (stderr, line)
    })
    .await
    .unwrap();
    assert!(waiting.contains("retrying"), "{waiting}");
    assert!(
        !waiting.contains("hunter2"),
        "password in the log: {waiting}"
    );

    // The database comes up: a plain TCP relay on that port to the real one.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let real_address = real_address.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(real_address).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let (log, serving, mut stderr_after) = tokio::task::spawn_blocking(move || {
        let (log, serving) = read_log_until(&mut stderr, "serving REST");
        (log, serving, stderr)
    })
    .await
    .unwrap();
    assert!(log.contains("database ready"), "{log}");
    assert!(!log.contains("hunter2"), "password in the log: {log}");
    let serving: serde_json::Value = serde_json::from_str(&serving).unwrap();
    let address = serving["fields"]["address"].as_str().unwrap();
    let ready = reqwest::get(format!("http://{address}/readyz")).await;
    server.kill().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_after, &mut rest).unwrap();
    assert_eq!(ready.unwrap().status(), 200, "{rest}");
    server.wait().unwrap();
}
