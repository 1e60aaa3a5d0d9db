//! What an attacker or a careless client tries (issue 14): tokens minted for another audience or
//! with absurd times, control characters in ids and names, a locked or foreign user acting on
//! itself, malformed messages, a full database queue, bodies over the limit at any size, JSON
//! `null`, odd paths, and a request the database refuses sent among many others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::*;
use totp_service::domain::clock::{Clock, SystemClock};
use totp_service::proto::zitadel::object::v2 as object_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

/// A change to an AddHumanUser request.
type EditRequest = dyn Fn(&mut user_pb::AddHumanUserRequest);

const INVALID_TOKEN: &str = "Errors.Token.Invalid (AUTH-7fs1e)";

pub async fn tokens_must_name_the_audience_and_have_sane_times(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let user = h.new_user().await;
    let grants = [("user.read", "*")];
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        h.token_with(&h.rules(), "admin", &grants, None, |claims| edit(claims))
    };
    let now = SystemClock.now().unix_seconds();
    let refused = [
        (
            "no aud",
            with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
        ),
        ("aud null", with(&|c| c["aud"] = json!(null))),
        ("aud a number", with(&|c| c["aud"] = json!(7))),
        (
            "aud another",
            with(&|c| c["aud"] = json!("another-service")),
        ),
        (
            "aud list without ours",
            with(&|c| c["aud"] = json!(["a", "b"])),
        ),
        ("iat in the future", with(&|c| c["iat"] = json!(now + 120))),
        ("exp near i64::MAX", with(&|c| c["exp"] = json!(i64::MAX))),
        ("exp as text", with(&|c| c["exp"] = json!("tomorrow"))),
    ];
    for (what, auth) in refused {
        let error = h.get_user(&auth, &user.id).await.unwrap_err();
        assert_eq!(error.code, 16, "{what}: {error:?}");
        assert_eq!(error.message, INVALID_TOKEN, "{what}");
    }
    let accepted = [
        ("aud ours", with(&|c| c["aud"] = json!(AUDIENCE))),
        (
            "aud list with ours",
            with(&|c| c["aud"] = json!(["x", AUDIENCE])),
        ),
        (
            "iat within the leeway",
            with(&|c| c["iat"] = json!(now + 30)),
        ),
    ];
    for (what, auth) in accepted {
        h.get_user(&auth, &user.id)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
}

pub async fn control_characters_are_refused_in_every_stored_or_looked_up_string(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let admin = h.admin();
    let rule = "value must not contain control characters";
    for bad in [
        "a\u{0}b",
        "tab\there",
        "line\nbreak",
        "esc\u{1b}[0m",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        let error = h.get_user(&admin, bad).await.unwrap_err();
        error.assert_validation(&format!("invalid GetUserByIDRequest.UserId: {rule}"));
        let error = h.verify_totp(&admin, bad, "123456").await.unwrap_err();
        error.assert_validation(&format!(
            "invalid VerifyTOTPRegistrationRequest.UserId: {rule}"
        ));
        let error = h.check_totp(&admin, bad, "123456").await.unwrap_err();
        error.assert_validation(&format!("invalid CheckTOTPRequest.UserId: {rule}"));

        let fresh = || TestUser {
            id: unique("user"),
            org: unique("org"),
            email: "a@example.com".into(),
        };
        let cases: Vec<(&str, Box<EditRequest>)> = vec![
            (
                "AddHumanUserRequest.UserId",
                Box::new(|r| r.user_id = Some(bad.into())),
            ),
            (
                "AddHumanUserRequest.Username",
                Box::new(|r| r.username = Some(bad.into())),
            ),
            (
                "SetHumanProfile.GivenName",
                Box::new(|r| r.profile.as_mut().unwrap().given_name = bad.into()),
            ),
            (
                "SetHumanProfile.NickName",
                Box::new(|r| r.profile.as_mut().unwrap().nick_name = Some(bad.into())),
            ),
            (
                "SetHumanEmail.Email",
                Box::new(|r| r.email.as_mut().unwrap().email = bad.into()),
            ),
            (
                "Organization.OrgId",
                Box::new(|r| {
                    r.organization = Some(object_pb::Organization {
                        org: Some(object_pb::organization::Org::OrgId(bad.into())),
                    })
                }),
            ),
        ];
        for (field, edit) in cases {
            let user = fresh();
            let mut request = human_request(&user);
            edit(&mut request);
            let error = h.add_human_user(&admin, request).await.unwrap_err();
            error.assert_validation(&format!("invalid {field}: {rule}"));
            let error = h.get_user(&admin, &user.id).await.unwrap_err();
            assert_eq!(error.code, 5, "{field}: nothing was stored");
        }
    }
    // Printable text outside ASCII is fine.
    let mut user = TestUser {
        id: unique("jürgen-ß"),
        org: unique("org"),
        email: "jürgen@example.com".into(),
    };
    user.id.push('✓');
    h.add_human_user(&admin, human_request(&user))
        .await
        .unwrap();
    h.get_user(&admin, &user.id).await.unwrap();
}

pub async fn a_locked_user_cannot_register_or_remove_its_own_totp(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let (user, _) = h.user_with_ready_totp().await;
    let itself = h.token(&user.id, &[]);
    h.lock_user(&h.admin(), &user.id).await.unwrap();
    let before = h.get_user(&h.admin(), &user.id).await.unwrap();
    let locked = ("COMMAND-SF3fg", "User is locked");
    h.remove_totp(&itself, &user.id)
        .await
        .unwrap_err()
        .assert_rejected(9, locked.0, locked.1);
    h.register_totp(&itself, &user.id)
        .await
        .unwrap_err()
        .assert_rejected(9, locked.0, locked.1);
    let after = h.get_user(&h.admin(), &user.id).await.unwrap();
    assert_eq!(
        before.details.unwrap().sequence,
        after.details.unwrap().sequence,
        "refusals append nothing"
    );
    // An administrator still may, and the user itself once unlocked.
    h.remove_totp(&h.admin(), &user.id).await.unwrap();
    h.unlock_user(&h.admin(), &user.id).await.unwrap();
    h.register_totp(&itself, &user.id).await.unwrap();
    h.remove_totp(&itself, &user.id).await.unwrap();
}

pub async fn self_service_needs_the_users_organisation_when_the_token_names_one(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let user = h.new_user().await;
    let foreign = h.token_with(&h.rules(), &user.id, &[], Some("another-org"), |_| {});
    h.register_totp(&foreign, &user.id)
        .await
        .unwrap_err()
        .assert_rejected(7, "AUTH-AWfge", "No matching permissions found");
    h.get_user(&foreign, &user.id)
        .await
        .unwrap_err()
        .assert_rejected(7, "AUTH-AWfge", "No matching permissions found");
    let own = h.token_with(&h.rules(), &user.id, &[], Some(&user.org), |_| {});
    h.register_totp(&own, &user.id).await.unwrap();
    let unnamed = h.token(&user.id, &[]);
    h.get_user(&unnamed, &user.id).await.unwrap();
}

pub async fn malformed_messages_are_invalid_argument(backend: Backend, protocol: Protocol) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let user = h.new_user().await;
    let admin = h.admin();
    // A field 1 (string) whose length runs past the end; a wire type 7, which does not exist.
    let malformed: [&[u8]; 3] = [&[0x0a, 0x7f, b'a'], &[0x0f, 0x01], &[0xff; 12]];
    let method = "zitadel.user.v2.UserService/GetUserByID";
    for message in malformed {
        let code = match protocol {
            Protocol::Grpc => h.grpc_raw(method, &admin, message.to_vec()).await.0,
            Protocol::GrpcWeb => {
                let body = totp_client::grpc_web::frame(message);
                let (status, headers, bytes) = h.grpc_web_raw(method, &admin, body).await;
                assert_eq!(status, 200);
                grpc_web_status(&headers, &bytes)
            }
            Protocol::Connect => {
                let (status, _, bytes) = h
                    .rest_raw_typed(
                        "POST",
                        &format!("/{method}"),
                        &admin,
                        Some(("application/proto", message.to_vec())),
                    )
                    .await;
                assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(body["code"], "invalid_argument");
                3
            }
            Protocol::Rest => {
                let (status, headers, bytes) = h
                    .rest_raw(
                        "POST",
                        &format!("/v2/users/{}/totp/verify", user.id),
                        &admin,
                        Some(message.to_vec()),
                    )
                    .await;
                rest_error_for_tests(status, &headers, &bytes).code
            }
        };
        assert_eq!(code, 3, "{message:?}");
    }
    // What tonic refuses before any service sees it: a request without a message, and a
    // malformed message to the health service, which has a codec of its own.
    let health = "grpc.health.v1.Health/Check";
    match protocol {
        Protocol::Grpc => {
            assert_eq!(h.grpc_raw(health, &Auth::None, vec![0x0a, 0x7f]).await.0, 3);
        }
        Protocol::GrpcWeb => {
            for (path, body) in [
                (method, Vec::new()),
                (health, totp_client::grpc_web::frame(&[0x0a, 0x7f])),
            ] {
                let (_, headers, bytes) = h.grpc_web_raw(path, &admin, body).await;
                assert_eq!(grpc_web_status(&headers, &bytes), 3, "{path}");
            }
        }
        Protocol::Rest | Protocol::Connect => {}
    }
}

/// The `grpc-status` of a gRPC-web answer (trailer frame or headers).
fn grpc_web_status(headers: &http::HeaderMap, bytes: &[u8]) -> i32 {
    let (_, trailers) = totp_client::grpc_web::parse_body(bytes);
    totp_client::grpc_web::field(headers, &trailers, "grpc-status")
        .expect("a grpc-status")
        .parse()
        .unwrap()
}

pub async fn a_full_database_queue_answers_resource_exhausted_at_once(
    backend: Backend,
    protocol: Protocol,
) {
    let mut options = Options::new(backend, protocol);
    options.db_queue_capacity = 1;
    let h = Arc::new(Harness::start(options).await);
    let (user, _) = h.user_with_ready_totp().await;
    let (ok, exhausted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..48 {
        let (h, user, ok, exhausted) = (h.clone(), user.id.clone(), ok.clone(), exhausted.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..5 {
                match h.get_user(&h.admin(), &user).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        assert_eq!(error.code, 8, "{error:?}");
                        error.assert_rejected(
                            8,
                            "STORE-full0",
                            "The service is overloaded, try again later",
                        );
                        exhausted.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let (ok, exhausted) = (
        ok.load(Ordering::Relaxed),
        exhausted.load(Ordering::Relaxed),
    );
    assert_eq!(ok + exhausted, 240);
    assert!(exhausted > 0, "a queue of one never filled: {ok} answered");
    assert!(ok > 0, "nothing was answered");
    // Once the crowd has gone, requests are answered again.
    h.get_user(&h.admin(), &user.id).await.unwrap();
}

pub async fn oversized_bodies_are_refused_in_the_protocol_at_any_size(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let user = h.new_user().await;
    for size in [65 * 1024, 4 * 1024 * 1024] {
        let huge = "1".repeat(size);
        let error = h
            .verify_totp(&h.admin(), &user.id, &huge)
            .await
            .unwrap_err();
        match protocol {
            Protocol::Rest => {
                assert_eq!(error.code, 3, "{size}: {error:?}");
                assert_eq!(error.http_status, Some(413), "{size}: {error:?}");
            }
            _ => assert!(error.code == 8 || error.code == 11, "{size}: {error:?}"),
        }
    }
    h.get_user(&h.admin(), &user.id).await.unwrap();
}

// ---- REST and Connect: JSON and paths -------------------------------------------------------

pub async fn json_null_means_the_field_is_absent(backend: Backend, protocol: Protocol) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let user = TestUser {
        id: unique("user"),
        org: unique("org"),
        email: "a@example.com".into(),
    };
    let body = json!({
        "userId": user.id, "username": null, "organization": {"orgId": user.org},
        "profile": {"givenName": "A", "familyName": "B", "nickName": null, "gender": null},
        "email": {"email": user.email, "isVerified": null}, "totpSecret": null,
    });
    let path = match protocol {
        Protocol::Connect => "/zitadel.user.v2.UserService/AddHumanUser",
        _ => "/v2/users/human",
    };
    let (status, _, bytes) = h
        .rest_raw(
            "POST",
            path,
            &h.admin(),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let shown = h.get_user(&h.admin(), &user.id).await.unwrap();
    assert_eq!(
        shown.user.unwrap().username,
        user.email,
        "username defaulted"
    );
}

pub async fn get_and_delete_on_users_human_address_the_user_named_human(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let admin = h.admin();
    // Before it exists: not found, not "method not allowed".
    let (status, headers, bytes) = h.rest_raw("GET", "/v2/users/human", &admin, None).await;
    rest_error_for_tests(status, &headers, &bytes).assert_rejected(
        5,
        "COMMAND-M9dsd",
        "User could not be found",
    );
    let user = TestUser {
        id: "human".into(),
        org: unique("org"),
        email: "human@example.com".into(),
    };
    // (Each test has a database of its own, so the id `human` is free.)
    h.add_human_user(&admin, human_request(&user))
        .await
        .unwrap();
    let (status, _, bytes) = h.rest_raw("GET", "/v2/users/human", &admin, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let shown: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(shown["user"]["userId"], "human");
    let (status, _, _) = h.rest_raw("DELETE", "/v2/users/human", &admin, None).await;
    assert_eq!(status, 200);
    let error = h.get_user(&admin, "human").await.unwrap_err();
    assert_eq!(error.code, 5);
}

pub async fn a_path_that_is_not_utf8_is_a_validation_error(backend: Backend, protocol: Protocol) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    for path in [
        "/v2/users/%FF",
        "/v2/users/%C3%28/totp",
        "/v2/users/a%80b/totp/verify",
    ] {
        let method = match path.rsplit('/').next() {
            Some("verify") => "POST",
            Some("totp") => "DELETE",
            _ => "GET",
        };
        let (status, headers, bytes) = h.rest_raw(method, path, &h.admin(), None).await;
        assert_eq!(status, 400, "{path}");
        let error = rest_error_for_tests(status, &headers, &bytes);
        assert_eq!(error.code, 3, "{path}: {error:?}");
    }
    // A NUL percent-encoded in the path is UTF-8, and a control character.
    let (status, headers, bytes) = h.rest_raw("GET", "/v2/users/a%00b", &h.admin(), None).await;
    rest_error_for_tests(status, &headers, &bytes).assert_validation(
        "invalid GetUserByIDRequest.UserId: value must not contain control characters",
    );
}

pub async fn health_and_reflection_take_at_most_64_kib_too(backend: Backend, protocol: Protocol) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let h = Harness::start(Options::new(backend, protocol)).await;
    let channel = h.grpc_channel().await;
    let error = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "x".repeat(100 * 1024),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{error:?}"
    );
    // Reflection is a stream: an oversized request gets no answer, where a small one does.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    for (host, answered) in [(String::new(), true), ("x".repeat(100 * 1024), false)] {
        let request = ServerReflectionRequest {
            host,
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let answer = match ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![request]))
            .await
        {
            Ok(answers) => answers.into_inner().message().await.ok().flatten(),
            Err(_) => None,
        };
        assert_eq!(answer.is_some(), answered, "{answer:?}");
    }
}

// ---- Postgres: one failing item among many ---------------------------------------------------

/// In the test's database: a user whose row the service cannot read (its profile is not JSON),
/// and a trigger that makes the database refuse every write of users whose id starts with
/// `poisoned-`: stand-ins for any value a database refuses, which validation no longer lets
/// through.
async fn poison(h: &Harness) -> (String, TestUser) {
    use sqlx::Connection;
    let url = h.database_url().expect("a Postgres test");
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let unreadable = unique("unreadable");
    sqlx::query(
        "INSERT INTO users (user_id, resource_owner, username, email, email_verified, profile, \
         state, sequence, created_at, change_date) \
         VALUES ($1, 'org', 'x', 'x@example.com', 0, 'not json', 'active', 1, 0, 0)",
    )
    .bind(&unreadable)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE OR REPLACE FUNCTION refuse_poisoned() RETURNS trigger AS $$ \
         BEGIN IF NEW.user_id LIKE 'poisoned-%' THEN RAISE EXCEPTION 'poisoned write'; END IF; \
         RETURN NEW; END; $$ LANGUAGE plpgsql; \
         DROP TRIGGER IF EXISTS refuse_poisoned ON events; \
         CREATE TRIGGER refuse_poisoned BEFORE INSERT ON events \
         FOR EACH ROW EXECUTE FUNCTION refuse_poisoned();",
    )
    .execute(&mut db)
    .await
    .unwrap();
    // Made through the API before the trigger bites: its first event is written by the insert
    // path, which the trigger refuses too, so the row goes in by hand.
    let poisoned = TestUser {
        id: unique("poisoned"),
        org: unique("org"),
        email: "p@example.com".into(),
    };
    sqlx::query(
        "INSERT INTO users (user_id, resource_owner, username, email, email_verified, profile, \
         state, sequence, created_at, change_date) \
         VALUES ($1, $2, 'p', 'p@example.com', 0, '{\"given_name\":\"P\",\"family_name\":\"Q\"}', \
         'active', 1, 0, 0)",
    )
    .bind(&poisoned.id)
    .bind(&poisoned.org)
    .execute(&mut db)
    .await
    .unwrap();
    (unreadable, poisoned)
}

pub async fn a_request_the_database_refuses_fails_no_other(backend: Backend, protocol: Protocol) {
    let h = Arc::new(Harness::start(Options::new(backend, protocol)).await);
    let (unreadable, poisoned) = poison(&h).await;
    let mut users = Vec::new();
    for _ in 0..32 {
        users.push(h.user_with_ready_totp().await.0);
    }
    let failures = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for user in users {
        let (h, failures, answered) = (h.clone(), failures.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            for round in 0..40 {
                // Reads and writes of the legitimate users: a get, and a wrong code (a write
                // that appends an event) while the count stays under the lockout.
                let result = if round % 2 == 0 {
                    h.get_user(&h.admin(), &user.id).await.map(|_| ())
                } else {
                    match h.check_totp(&h.admin(), &user.id, "000000").await {
                        Err(e) if e.code == 3 || e.code == 9 => Ok(()),
                        other => other.map(|_| ()),
                    }
                };
                if let Err(error) = result {
                    eprintln!("legitimate request failed: {error:?}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
                if round % 8 == 7 {
                    h.unlock_user(&h.admin(), &user.id).await.ok();
                }
            }
        }));
    }
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (h, unreadable, poisoned) = (h.clone(), unreadable.clone(), poisoned.id.clone());
            tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..60 {
                    refused += h.get_user(&h.admin(), &unreadable).await.is_err() as usize;
                    refused += h.register_totp(&h.admin(), &poisoned).await.is_err() as usize;
                }
                refused
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let mut refused = 0;
    for attacker in attackers {
        refused += attacker.await.unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), 32 * 40);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "legitimate requests failed"
    );
    assert_eq!(refused, 4 * 120, "the poisoned requests themselves fail");
}

/// Slow clients: connections that send nothing, or headers without their end, or a body more
/// slowly than the body timeout, are closed once it has passed.
pub async fn silent_and_slow_clients_are_cut_off_after_the_read_timeouts(
    backend: Backend,
    protocol: Protocol,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut options = Options::new(backend, protocol);
    options.read_timeout = Duration::from_secs(1);
    let h = Harness::start(options).await;
    let addr = h.addr;
    let kinds: [&[u8]; 3] = [
        b"",
        b"POST /v2/users/human HTTP/1.1\r\nHost: x\r\nContent-Ty",
        b"POST /v2/users/human HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{\"us",
    ];
    let started = std::time::Instant::now();
    let mut probes = Vec::new();
    for kind in kinds {
        for _ in 0..20 {
            probes.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.write_all(kind).await.unwrap();
                let mut answer = Vec::new();
                // The server must end the connection; the client never would.
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
                    .await
                    .expect("the server closed the connection")
                    .ok();
                answer
            }));
        }
    }
    for probe in probes {
        let answer = String::from_utf8_lossy(&probe.await.unwrap()).into_owned();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "closed after {elapsed:?}");
    // Meanwhile and after, the service answers.
    let user = h.new_user().await;
    h.get_user(&h.admin(), &user.id).await.unwrap();
}

/// At most `TOTP_MAX_CONNECTIONS` connections are served at once: the next client waits (in the
/// kernel's backlog) until one ends, here when the header timeout cuts off a silent one.
pub async fn connections_beyond_the_cap_wait_for_a_free_place(
    backend: Backend,
    protocol: Protocol,
) {
    let mut options = Options::new(backend, protocol);
    options.max_connections = 3;
    options.read_timeout = Duration::from_secs(2);
    let h = Harness::start(options).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        silent.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    let url = format!("http://{}/healthz", h.addr);
    let early = client
        .get(&url)
        .timeout(Duration::from_millis(800))
        .send()
        .await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    let later = client
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once a place was free");
    assert_eq!(later.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    drop(silent);
}
