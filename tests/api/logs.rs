//! Runs the real binary with every log level on, drives a full register → verify → check run
//! (with a wrong code too) over REST, and asserts that neither the secret nor any code submitted
//! appears anywhere in what it logged.

use std::io::Read;
use std::time::Duration;

use crate::binary::{Server, admin_token, serve};
use crate::support::unique;
use totp_service::domain::clock::{Clock, SystemClock};
use totp_service::domain::totp::{self, Algorithm, Secret};

fn code_at_offset(secret: &str, offset: i64) -> String {
    let secret = Secret::from_base32(secret).unwrap();
    let step = totp::step_at(SystemClock.now().unix_seconds(), totp::PERIOD) + offset;
    totp::code_for_step(&secret, step, totp::DIGITS, Algorithm::Sha1)
}

/// Whether `needle` (all digits) appears in `haystack` as a number of its own.
fn contains_number(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_secrets_or_codes() {
    let data_dir = tempfile::tempdir().unwrap();
    let Server {
        mut process,
        address,
        mut stderr,
        startup_log,
    } = serve(data_dir.path(), &[("RUST_LOG", "trace")]);
    let mut logged = startup_log;
    let token = admin_token(
        data_dir.path(),
        &["user.write", "user.credential.write", "session.write"],
    );

    let http = reqwest::Client::new();
    let user_id = unique("logged");
    let post = |path: String, body: String| {
        http.post(format!("http://{address}{path}"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let added = post(
        "/v2/users/human".into(),
        format!(
            r#"{{"userId":"{user_id}","organization":{{"orgId":"acme"}},"profile":{{"givenName":"A","familyName":"B"}},"email":{{"email":"a@example.com"}}}}"#
        ),
    )
    .await
    .unwrap();
    assert_eq!(added.status(), 200);
    let registered: serde_json::Value = post(format!("/v2/users/{user_id}/totp"), "{}".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = registered["secret"].as_str().unwrap().to_owned();
    let verify_code = code_at_offset(&secret, 0);
    let verified = post(
        format!("/v2/users/{user_id}/totp/verify"),
        format!(r#"{{"code":"{verify_code}"}}"#),
    )
    .await
    .unwrap();
    assert_eq!(verified.status(), 200);
    let check_code = code_at_offset(&secret, 1);
    let checked = post(
        format!("/v2/users/{user_id}/totp/check"),
        format!(r#"{{"code":"{check_code}"}}"#),
    )
    .await
    .unwrap();
    assert_eq!(checked.status(), 200);
    let wrong_code = if check_code == "999999" {
        "999998"
    } else {
        "999999"
    };
    let refused = post(
        format!("/v2/users/{user_id}/totp/check"),
        format!(r#"{{"code":"{wrong_code}"}}"#),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);

    // Stop the server and read everything it logged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    process.kill().unwrap();
    process.wait().unwrap();
    stderr.read_to_string(&mut logged).unwrap();

    assert!(
        logged.lines().count() > 20,
        "trace logging is on:\n{logged}"
    );
    assert!(logged.contains(&user_id), "the run is in the log");
    for (what, value) in [
        ("secret", secret.clone()),
        ("lowercase secret", secret.to_lowercase()),
    ] {
        assert!(!logged.contains(&value), "the {what} appears in the log");
    }
    for code in [&verify_code, &check_code, wrong_code] {
        assert!(
            !contains_number(&logged, code),
            "code {code} appears in the log"
        );
    }
    assert!(
        !logged.contains(&token),
        "the bearer token appears in the log"
    );
}
