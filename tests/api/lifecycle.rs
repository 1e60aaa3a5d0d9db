//! The binary's life: SIGTERM during a burst of requests loses none of them. Every request the
//! service answered is answered completely, every acknowledged write is stored, and no request
//! that failed to connect left a trace; `/readyz` turns false while draining.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::binary::{admin_token, serve};
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
