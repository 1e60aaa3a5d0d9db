//! The cases of the core and abuse-resistance issues. Each takes a backend and a protocol and
//! asserts what SPEC.md says: codes, ids, English messages, fields.

use std::time::Duration;

use totp_service::domain::clock::Clock;
use totp_service::domain::clock::SystemClock;
use totp_service::proto::zitadel::object::v2 as object_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

use crate::support::*;

async fn harness(backend: Backend, protocol: Protocol) -> Harness {
    Harness::start(Options::new(backend, protocol)).await
}

const NOT_FOUND_USER: (i32, &str, &str) = (5, "COMMAND-M9dsd", "User could not be found");
const NO_PERMISSION: (i32, &str, &str) = (7, "AUTH-AWfge", "No matching permissions found");
const INVALID_CODE: (i32, &str, &str) = (3, "EVENT-8isk2", "Invalid code");
const ALREADY_USED: (i32, &str, &str) = (3, "TOTP-Auw0a", "Code was already used");
const USER_LOCKED: (i32, &str, &str) = (9, "COMMAND-SF3fg", "User is locked");

#[track_caller]
fn assert_is<T: std::fmt::Debug>(
    result: Result<T, ApiError>,
    (code, id, message): (i32, &str, &str),
) {
    match result {
        Ok(value) => panic!("expected {id}, got success {value:?}"),
        Err(error) => error.assert_rejected(code, id, message),
    }
}

fn details(d: &Option<object_pb::Details>) -> &object_pb::Details {
    d.as_ref().expect("details are set")
}

pub async fn register_returns_an_otpauth_uri_and_a_32_character_secret(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let registered = h.register_totp(&h.admin(), &user.id).await.unwrap();
    assert_eq!(registered.secret.len(), 32);
    assert!(
        registered
            .secret
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
    );
    assert_eq!(
        registered.uri,
        format!(
            "otpauth://totp/ACME%20Corp:{}?algorithm=SHA1&digits=6&issuer=ACME%20Corp&period=30&secret={}",
            user.email, registered.secret
        )
    );
    let d = details(&registered.details);
    assert_eq!(
        d.sequence, 2,
        "user.human.added, then user.human.mfa.otp.added"
    );
    assert_eq!(d.resource_owner, user.org);
}

pub async fn registering_again_before_verifying_replaces_the_secret(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, first) = h.user_with_pending_totp().await;
    let second = h.register_totp(&h.admin(), &user.id).await.unwrap().secret;
    assert_ne!(first, second);
    assert_is(
        h.verify_totp(&h.admin(), &user.id, &h.code(&first, 0))
            .await,
        INVALID_CODE,
    );
    h.verify_totp(&h.admin(), &user.id, &h.code(&second, 0))
        .await
        .unwrap();
}

pub async fn registering_after_verifying_is_refused(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, _) = h.user_with_ready_totp().await;
    assert_is(
        h.register_totp(&h.admin(), &user.id).await,
        (
            6,
            "COMMAND-do9se",
            "Multifactor OTP (OneTimePassword) is already set up",
        ),
    );
}

pub async fn verify_accepts_the_previous_current_and_next_step(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    for offset in [-1, 0, 1] {
        let (user, secret) = h.user_with_pending_totp().await;
        let verified = h
            .verify_totp(&h.admin(), &user.id, &h.code(&secret, offset))
            .await;
        let verified = verified.unwrap_or_else(|e| panic!("step {offset:+}: {e:?}"));
        assert_eq!(details(&verified.details).sequence, 3);
    }
}

pub async fn verify_refuses_a_code_two_steps_old(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    assert_is(
        h.verify_totp(&h.admin(), &user.id, &h.code(&secret, -2))
            .await,
        INVALID_CODE,
    );
    assert_is(
        h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 2))
            .await,
        INVALID_CODE,
    );
}

pub async fn verify_trims_surrounding_white_space(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let code = format!(" {} \t", h.code(&secret, 0));
    h.verify_totp(&h.admin(), &user.id, &code).await.unwrap();
}

pub async fn verify_refuses_seven_digit_and_non_digit_codes(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let code = h.code(&secret, 0);
    for bad in [
        format!("{code}0"),
        format!("{}a", &code[..5]),
        "abcdef".to_owned(),
        code[..5].to_owned(),
    ] {
        assert_is(
            h.verify_totp(&h.admin(), &user.id, &bad).await,
            INVALID_CODE,
        );
    }
}

pub async fn verify_without_registration_is_not_found(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    assert_is(
        h.verify_totp(&h.admin(), &user.id, "123456").await,
        (
            5,
            "COMMAND-3Mif9s",
            "Multifactor OTP (OneTimePassword) doesn't exist",
        ),
    );
}

pub async fn verify_twice_is_refused(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_ready_totp().await;
    assert_is(
        h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 1))
            .await,
        (
            9,
            "COMMAND-qx4ls",
            "Multifactor OTP (OneTimePassword) is already set up",
        ),
    );
}

pub async fn remove_works_on_pending_and_ready_registrations(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (pending, _) = h.user_with_pending_totp().await;
    let removed = h.remove_totp(&h.admin(), &pending.id).await.unwrap();
    assert_eq!(details(&removed.details).sequence, 3);
    let (ready, _) = h.user_with_ready_totp().await;
    let removed = h.remove_totp(&h.admin(), &ready.id).await.unwrap();
    assert_eq!(details(&removed.details).sequence, 4);
    let methods = h.list_methods(&h.admin(), &ready.id).await.unwrap();
    assert!(methods.auth_method_types.is_empty());
    // Removed means gone: a new registration is possible again.
    h.register_totp(&h.admin(), &ready.id).await.unwrap();
}

pub async fn remove_without_registration_is_not_found(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    assert_is(
        h.remove_totp(&h.admin(), &user.id).await,
        (
            5,
            "COMMAND-Hd9sd",
            "Multifactor OTP (OneTimePassword) doesn't exist",
        ),
    );
}

pub async fn unknown_user_is_not_found_on_every_call(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let admin = h.admin();
    let nobody = unique("nobody");
    assert_is(h.register_totp(&admin, &nobody).await, NOT_FOUND_USER);
    assert_is(
        h.verify_totp(&admin, &nobody, "123456").await,
        NOT_FOUND_USER,
    );
    assert_is(h.remove_totp(&admin, &nobody).await, NOT_FOUND_USER);
    assert_is(
        h.check_totp(&admin, &nobody, "123456").await,
        NOT_FOUND_USER,
    );
    assert_is(h.get_user(&admin, &nobody).await, NOT_FOUND_USER);
    assert_is(h.list_methods(&admin, &nobody).await, NOT_FOUND_USER);
    assert_is(h.delete_user(&admin, &nobody).await, NOT_FOUND_USER);
    assert_is(h.lock_user(&admin, &nobody).await, NOT_FOUND_USER);
    assert_is(h.unlock_user(&admin, &nobody).await, NOT_FOUND_USER);
}

pub async fn empty_and_overlong_fields_fail_validation(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let admin = h.admin();
    let rule = "value length must be between 1 and 200 runes, inclusive";
    let long = "x".repeat(201);
    // 200 characters are fine (the user does not exist), 201 are not; characters, not bytes.
    assert_is(
        h.verify_totp(&admin, &"é".repeat(200), "123456").await,
        NOT_FOUND_USER,
    );
    for user_id in ["", long.as_str()] {
        h.verify_totp(&admin, user_id, "123456")
            .await
            .unwrap_err()
            .assert_validation(&format!(
                "invalid VerifyTOTPRegistrationRequest.UserId: {rule}"
            ));
        h.register_totp(&admin, user_id)
            .await
            .unwrap_err()
            .assert_validation(&format!("invalid RegisterTOTPRequest.UserId: {rule}"));
        h.remove_totp(&admin, user_id)
            .await
            .unwrap_err()
            .assert_validation(&format!("invalid RemoveTOTPRequest.UserId: {rule}"));
        h.check_totp(&admin, user_id, "123456")
            .await
            .unwrap_err()
            .assert_validation(&format!("invalid CheckTOTPRequest.UserId: {rule}"));
    }
    let user = h.new_user().await;
    for code in ["", long.as_str()] {
        h.verify_totp(&admin, &user.id, code)
            .await
            .unwrap_err()
            .assert_validation(&format!(
                "invalid VerifyTOTPRegistrationRequest.Code: {rule}"
            ));
    }
    // Validation comes before the lookup: an unknown user with an empty code is a 3, not a 5.
    h.verify_totp(&admin, "nobody-at-all", "")
        .await
        .unwrap_err()
        .assert_validation(&format!(
            "invalid VerifyTOTPRegistrationRequest.Code: {rule}"
        ));
}

pub async fn bad_tokens_are_unauthenticated(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let grants = [("user.credential.write", "*")];
    let rules = h.rules();
    let expired = h.token_with(&rules, "admin", &grants, None, |claims| {
        let past = SystemClock.now().unix_seconds() - 3600;
        claims["iat"] = (past - 600).into();
        claims["exp"] = past.into();
    });
    let mut wrong_issuer_rules = h.rules();
    wrong_issuer_rules.issuer = "https://someone-else.test".into();
    let wrong_issuer = h.token_with(&wrong_issuer_rules, "admin", &grants, None, |_| {});
    let mut wrong_audience_rules = h.rules();
    wrong_audience_rules.audience = Some("another-service".into());
    let wrong_audience = h.token_with(&wrong_audience_rules, "admin", &grants, None, |_| {});
    let Auth::Header(valid) = h.token("admin", &grants) else {
        unreachable!()
    };
    let tampered = Auth::Header(format!("{}x", valid.trim_end_matches(|c| c != '.')));

    let cases: Vec<(Auth, &str)> = vec![
        (Auth::None, "auth header missing"),
        (
            Auth::Header("Basic dXNlcjpwYXNz".into()),
            "invalid auth header (AUTH-toLo1)",
        ),
        (
            Auth::Header("garbage".into()),
            "invalid auth header (AUTH-toLo1)",
        ),
        (
            Auth::bearer("not.a.jwt"),
            "Errors.Token.Invalid (AUTH-7fs1e)",
        ),
        (expired, "Errors.Token.Invalid (AUTH-7fs1e)"),
        (wrong_issuer, "Errors.Token.Invalid (AUTH-7fs1e)"),
        (wrong_audience, "Errors.Token.Invalid (AUTH-7fs1e)"),
        (tampered, "Errors.Token.Invalid (AUTH-7fs1e)"),
    ];
    for (auth, message) in cases {
        let error = h.verify_totp(&auth, &user.id, "123456").await.unwrap_err();
        assert_eq!(error.code, 16, "{auth:?}: {error:?}");
        assert_eq!(error.message, message, "{auth:?}");
        assert!(error.details.is_empty(), "{auth:?}: {error:?}");
        if protocol == Protocol::Rest {
            assert_eq!(error.http_status, Some(401));
            assert!(
                error
                    .www_authenticate
                    .as_deref()
                    .is_some_and(|v| v.starts_with("Bearer"))
            );
        }
    }
    // Authentication comes before validation.
    let error = h.verify_totp(&Auth::None, "", "").await.unwrap_err();
    assert_eq!(error.code, 16);
}

pub async fn callers_without_permission_are_refused(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let stranger = h.token("stranger", &[]);
    let other_org = h.token(
        "admin-elsewhere",
        &[("user.credential.write", "some-other-org")],
    );
    for auth in [&stranger, &other_org] {
        assert_is(
            h.verify_totp(auth, &user.id, &h.code(&secret, 0)).await,
            NO_PERMISSION,
        );
        assert_is(h.register_totp(auth, &user.id).await, NO_PERMISSION);
    }
    // Without the permission anywhere, a caller cannot even learn whether a user exists.
    assert_is(
        h.verify_totp(&stranger, &unique("nobody"), "123456").await,
        NO_PERMISSION,
    );
    // Holding it elsewhere, the lookup happens first (as ZITADEL), so an unknown user is a 5.
    assert_is(
        h.verify_totp(&other_org, &unique("nobody"), "123456").await,
        NOT_FOUND_USER,
    );
    // A different permission in the right org is not enough.
    let reader = h.token("reader", &[("user.read", &user.org)]);
    assert_is(
        h.verify_totp(&reader, &user.id, &h.code(&secret, 0)).await,
        NO_PERMISSION,
    );
    // Nothing was changed by the refused calls: the pending secret still verifies.
    h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
}

pub async fn permission_in_the_users_org_or_every_org_is_enough(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let org_admin = h.token("org-admin", &[("user.credential.write", &user.org)]);
    h.verify_totp(&org_admin, &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
    let (other, secret) = h.user_with_pending_totp().await;
    let global_admin = h.token("global-admin", &[("user.credential.write", "*")]);
    h.verify_totp(&global_admin, &other.id, &h.code(&secret, 0))
        .await
        .unwrap();
}

pub async fn users_may_serve_themselves_but_not_delete_themselves(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let me = h.token(&user.id, &[]);
    let secret = h.register_totp(&me, &user.id).await.unwrap().secret;
    h.verify_totp(&me, &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
    h.get_user(&me, &user.id).await.unwrap();
    h.list_methods(&me, &user.id).await.unwrap();
    h.check_totp(&me, &user.id, &h.code(&secret, 1))
        .await
        .unwrap();
    assert_is(h.delete_user(&me, &user.id).await, NO_PERMISSION);
    assert_is(h.lock_user(&me, &user.id).await, NO_PERMISSION);
    h.remove_totp(&me, &user.id).await.unwrap();
}

pub async fn sequence_grows_by_one_per_event_and_change_date_is_now(
    backend: Backend,
    protocol: Protocol,
) {
    let mut options = Options::new(backend, protocol);
    options.system_clock = true;
    let h = Harness::start(options).await;
    let user = TestUser {
        id: unique("user"),
        org: unique("org"),
        email: format!("{}@example.com", unique("mail")),
    };
    let admin = h.admin();
    let added = h
        .add_human_user(&admin, human_request(&user))
        .await
        .unwrap();
    assert_eq!(added.user_id, user.id);
    let mut sequences = vec![details(&added.details).clone()];
    let secret = h.register_totp(&admin, &user.id).await.unwrap();
    sequences.push(details(&secret.details).clone());
    let second = h.register_totp(&admin, &user.id).await.unwrap();
    sequences.push(details(&second.details).clone());
    let verified = h
        .verify_totp(&admin, &user.id, &h.code(&second.secret, 0))
        .await
        .unwrap();
    sequences.push(details(&verified.details).clone());
    let removed = h.remove_totp(&admin, &user.id).await.unwrap();
    sequences.push(details(&removed.details).clone());
    for (index, d) in sequences.iter().enumerate() {
        assert_eq!(d.sequence, index as u64 + 1);
        assert_eq!(d.resource_owner, user.org);
        let change = d.change_date.expect("changeDate set");
        let change_micros = change.seconds * 1_000_000 + i64::from(change.nanos) / 1_000;
        let now = SystemClock.now().0;
        assert!(
            (now - change_micros).abs() < 1_000_000,
            "changeDate {change:?} is not within a second of now"
        );
        assert!(d.creation_date.is_none());
    }
    let shown = h.get_user(&admin, &user.id).await.unwrap();
    assert_eq!(details(&shown.details), sequences.last().unwrap());
}

pub async fn adding_a_user_twice_is_refused(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    assert_is(
        h.add_human_user(&h.admin(), human_request(&user)).await,
        (6, "COMMAND-7yiox1isql", "User already exists"),
    );
}

pub async fn add_human_user_needs_an_org_id(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = TestUser {
        id: unique("user"),
        org: unique("org"),
        email: "x@example.com".into(),
    };
    let mut by_domain = human_request(&user);
    by_domain.organization = Some(object_pb::Organization {
        org: Some(object_pb::organization::Org::OrgDomain(
            "example.com".into(),
        )),
    });
    let error = h.add_human_user(&h.admin(), by_domain).await.unwrap_err();
    assert_eq!(error.code, 3, "{error:?}");
    assert!(error.message.contains("use org_id"), "{error:?}");

    let mut no_org = human_request(&user);
    no_org.organization = None;
    let error = h
        .add_human_user(&h.admin(), no_org.clone())
        .await
        .unwrap_err();
    assert_eq!(error.code, 3, "{error:?}");

    // Without an org in the request, the token's resource owner is used.
    let rules = h.rules();
    let with_owner = h.token_with(
        &rules,
        "org-admin",
        &[("user.write", &user.org)],
        Some(&user.org),
        |_| {},
    );
    let added = h.add_human_user(&with_owner, no_org).await.unwrap();
    assert_eq!(details(&added.details).resource_owner, user.org);
    // user.write elsewhere is not enough.
    let elsewhere = h.token("other-admin", &[("user.write", "other-org")]);
    let mut another = human_request(&TestUser {
        id: unique("user"),
        ..user.clone()
    });
    another.username = Some(unique("name"));
    assert_is(h.add_human_user(&elsewhere, another).await, NO_PERMISSION);
}

pub async fn deleted_users_are_not_found(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let deleted = h.delete_user(&h.admin(), &user.id).await.unwrap();
    assert_eq!(details(&deleted.details).sequence, 3);
    assert_is(
        h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 0))
            .await,
        NOT_FOUND_USER,
    );
    assert_is(h.get_user(&h.admin(), &user.id).await, NOT_FOUND_USER);
    assert_is(h.delete_user(&h.admin(), &user.id).await, NOT_FOUND_USER);
}

pub async fn get_user_shows_the_stored_fields_and_state(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = TestUser {
        id: unique("user"),
        org: unique("org"),
        email: format!("{}@example.com", unique("mail")),
    };
    let mut request = human_request(&user);
    request.username = Some("ada".into());
    request.profile = Some(user_pb::SetHumanProfile {
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        nick_name: Some("countess".into()),
        display_name: Some("Ada L.".into()),
        preferred_language: Some("en".into()),
        gender: Some(user_pb::Gender::Female as i32),
    });
    request.email = Some(user_pb::SetHumanEmail {
        email: user.email.clone(),
        verification: Some(user_pb::set_human_email::Verification::IsVerified(true)),
    });
    h.add_human_user(&h.admin(), request).await.unwrap();
    let shown = h
        .get_user(&h.admin(), &user.id)
        .await
        .unwrap()
        .user
        .expect("user");
    assert_eq!(shown.user_id, user.id);
    assert_eq!(shown.state, user_pb::UserState::Active as i32);
    assert_eq!(shown.username, "ada");
    assert_eq!(shown.login_names, vec!["ada".to_owned()]);
    assert_eq!(shown.preferred_login_name, "ada");
    let human = shown.human.expect("human");
    let profile = human.profile.expect("profile");
    assert_eq!(profile.given_name, "Ada");
    assert_eq!(profile.family_name, "Lovelace");
    assert_eq!(profile.nick_name.as_deref(), Some("countess"));
    assert_eq!(profile.display_name.as_deref(), Some("Ada L."));
    assert_eq!(profile.preferred_language.as_deref(), Some("en"));
    assert_eq!(profile.gender, Some(user_pb::Gender::Female as i32));
    let email = human.email.expect("email");
    assert_eq!(email.email, user.email);
    assert!(email.is_verified);
    assert_eq!(details(&shown.details).sequence, 1);
}

pub async fn list_authentication_methods_shows_totp_once_ready(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let pending = h.list_methods(&h.admin(), &user.id).await.unwrap();
    assert!(pending.auth_method_types.is_empty());
    h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
    let ready = h.list_methods(&h.admin(), &user.id).await.unwrap();
    assert_eq!(
        ready.auth_method_types,
        vec![user_pb::AuthenticationMethodType::Totp as i32]
    );
    let d = ready.details.expect("list details");
    assert_eq!(d.total_result, 1);
    assert_eq!(d.processed_sequence, 3);
}

pub async fn check_accepts_a_ready_totp_code_once(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_ready_totp().await;
    h.advance_steps(1);
    let checker = h.token("login-ui", &[("session.write", &user.org)]);
    let checked = h
        .check_totp(&checker, &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
    assert_eq!(details(&checked.details).sequence, 4);
    assert_is(
        h.check_totp(&checker, &user.id, &h.code(&secret, 0)).await,
        ALREADY_USED,
    );
    let wrong_permission = h.token("ui", &[("user.credential.write", &user.org)]);
    assert_is(
        h.check_totp(&wrong_permission, &user.id, &h.code(&secret, 1))
            .await,
        NO_PERMISSION,
    );
}

pub async fn check_refuses_pending_and_missing_totp(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (pending, secret) = h.user_with_pending_totp().await;
    assert_is(
        h.check_totp(&h.admin(), &pending.id, &h.code(&secret, 0))
            .await,
        (
            9,
            "COMMAND-3Mif9s",
            "Multifactor OTP (OneTimePassword) isn't ready",
        ),
    );
    let without = h.new_user().await;
    assert_is(
        h.check_totp(&h.admin(), &without.id, "123456").await,
        (
            5,
            "COMMAND-3Mif9s",
            "Multifactor OTP (OneTimePassword) doesn't exist",
        ),
    );
}

pub async fn a_code_is_never_accepted_twice(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let admin = h.admin();
    // Verified with the next step's code: that step and all before it are used up.
    h.verify_totp(&admin, &user.id, &h.code(&secret, 1))
        .await
        .unwrap();
    assert_is(
        h.check_totp(&admin, &user.id, &h.code(&secret, 1)).await,
        ALREADY_USED,
    );
    assert_is(
        h.check_totp(&admin, &user.id, &h.code(&secret, 0)).await,
        ALREADY_USED,
    );
    assert_is(
        h.check_totp(&admin, &user.id, &h.code(&secret, -1)).await,
        ALREADY_USED,
    );
    h.advance_steps(1);
    h.check_totp(&admin, &user.id, &h.code(&secret, 1))
        .await
        .unwrap();
    // Each refusal counted and was recorded: 3 events for register/verify, 3 failures, 1 success.
    let shown = h.get_user(&admin, &user.id).await.unwrap();
    assert_eq!(details(&shown.details).sequence, 7);
}

pub async fn wrong_codes_lock_the_user_after_max_attempts(backend: Backend, protocol: Protocol) {
    let mut options = Options::new(backend, protocol);
    options.max_attempts = 3;
    options.lockout = Duration::from_secs(120);
    let h = Harness::start(options).await;
    let (user, secret) = h.user_with_ready_totp().await;
    let admin = h.admin();
    let wrong = if h.code(&secret, 1) == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        assert_is(h.check_totp(&admin, &user.id, wrong).await, INVALID_CODE);
    }
    // Locked: even the right code is not evaluated, and nothing is appended.
    let before = h.get_user(&admin, &user.id).await.unwrap();
    assert_eq!(
        before.user.as_ref().unwrap().state,
        user_pb::UserState::Locked as i32
    );
    // register, verify = 3; three failures + user.locked = 7.
    assert_eq!(details(&before.details).sequence, 7);
    assert_is(
        h.check_totp(&admin, &user.id, &h.code(&secret, 1)).await,
        USER_LOCKED,
    );
    let after = h.get_user(&admin, &user.id).await.unwrap();
    assert_eq!(details(&after.details).sequence, 7);
    // The lock runs out after its duration.
    h.clock.advance(Duration::from_secs(121));
    let shown = h.get_user(&admin, &user.id).await.unwrap();
    assert_eq!(shown.user.unwrap().state, user_pb::UserState::Active as i32);
    h.check_totp(&admin, &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
}

pub async fn lock_and_unlock_user(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_ready_totp().await;
    let admin = h.admin();
    let locked = h.lock_user(&admin, &user.id).await.unwrap();
    assert_eq!(details(&locked.details).sequence, 4);
    assert_is(
        h.lock_user(&admin, &user.id).await,
        (9, "COMMAND-3NN8v", "User is already locked"),
    );
    h.advance_steps(1);
    assert_is(
        h.check_totp(&admin, &user.id, &h.code(&secret, 0)).await,
        USER_LOCKED,
    );
    let shown = h.get_user(&admin, &user.id).await.unwrap().user.unwrap();
    assert_eq!(shown.state, user_pb::UserState::Locked as i32);
    let unlocked = h.unlock_user(&admin, &user.id).await.unwrap();
    assert_eq!(details(&unlocked.details).sequence, 5);
    assert_is(
        h.unlock_user(&admin, &user.id).await,
        (9, "COMMAND-4M0ds", "User is not locked"),
    );
    h.check_totp(&admin, &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
}

pub async fn imported_secrets_make_a_ready_totp(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = TestUser {
        id: unique("user"),
        org: unique("org"),
        email: format!("{}@example.com", unique("mail")),
    };
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let mut request = human_request(&user);
    request.totp_secret = Some(secret.into());
    let added = h.add_human_user(&h.admin(), request).await.unwrap();
    assert_eq!(
        details(&added.details).sequence,
        3,
        "added, otp.added, otp.verified"
    );
    h.check_totp(&h.admin(), &user.id, &h.code(secret, 0))
        .await
        .unwrap();

    let short = TestUser {
        id: unique("user"),
        ..user.clone()
    };
    let mut request = human_request(&short);
    request.totp_secret = Some("JBSWY3DPEHPK3PXP".into());
    let error = h.add_human_user(&h.admin(), request).await.unwrap_err();
    assert_eq!(error.code, 3, "{error:?}");
    assert_is(h.get_user(&h.admin(), &short.id).await, NOT_FOUND_USER);
}

// ---- REST only --------------------------------------------------------------------------------

pub async fn rest_accepts_snake_case_and_camel_case_keys(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let admin = h.admin();
    for (style, body) in [
        (
            "camel",
            r#"{"userId":"ID","organization":{"orgId":"ORG"},"profile":{"givenName":"A","familyName":"B"},"email":{"email":"a@example.com","isVerified":true},"ignoredUnknownField":1}"#,
        ),
        (
            "snake",
            r#"{"user_id":"ID","organization":{"org_id":"ORG"},"profile":{"given_name":"A","family_name":"B"},"email":{"email":"a@example.com","is_verified":true}}"#,
        ),
    ] {
        let id = unique(style);
        let org = unique("org");
        let body = body.replace("ID", &id).replace("ORG", &org);
        let (status, _, bytes) = h
            .rest_raw("POST", "/v2/users/human", &admin, Some(body.into_bytes()))
            .await;
        assert_eq!(status, 200, "{style}: {}", String::from_utf8_lossy(&bytes));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["userId"], id.as_str());
        assert_eq!(json["details"]["sequence"], "1", "uint64 as a JSON string");
        assert_eq!(json["details"]["resourceOwner"], org.as_str());
        let change_date = json["details"]["changeDate"].as_str().unwrap();
        assert!(change_date.ends_with('Z'), "{change_date}");
        let (status, _, bytes) = h
            .rest_raw("GET", &format!("/v2/users/{id}"), &admin, None)
            .await;
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["user"]["state"], "USER_STATE_ACTIVE");
        assert_eq!(json["user"]["human"]["email"]["isVerified"], true);
        // Snake-case code on verify too.
        let registered = h.register_totp(&admin, &id).await.unwrap();
        let body = format!(r#"{{"code":"{}"}}"#, h.code(&registered.secret, 0));
        let (status, _, _) = h
            .rest_raw(
                "POST",
                &format!("/v2/users/{id}/totp/verify"),
                &admin,
                Some(body.into_bytes()),
            )
            .await;
        assert_eq!(status, 200);
    }
}

pub async fn rest_path_user_id_wins_over_body(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let (other, _) = h.user_with_pending_totp().await;
    let body = format!(
        r#"{{"userId":"{}","code":"{}"}}"#,
        other.id,
        h.code(&secret, 0)
    );
    let (status, _, bytes) = h
        .rest_raw(
            "POST",
            &format!("/v2/users/{}/totp/verify", user.id),
            &h.admin(),
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let methods = h.list_methods(&h.admin(), &other.id).await.unwrap();
    assert!(
        methods.auth_method_types.is_empty(),
        "the body's user was left alone"
    );
}

pub async fn rest_refuses_malformed_json_and_wrong_content_types(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, _) = h.user_with_pending_totp().await;
    let path = format!("/v2/users/{}/totp/verify", user.id);
    for body in ["{", "[1,2]", r#"{"code": 123456}"#, "null x"] {
        let (status, headers, bytes) = h
            .rest_raw("POST", &path, &h.admin(), Some(body.as_bytes().to_vec()))
            .await;
        assert_eq!(status, 400, "{body}");
        let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
        assert_eq!(error.code, 3, "{body}: {error:?}");
        assert!(error.details.is_empty());
    }
    let (status, _, bytes) = h
        .rest_raw_typed(
            "POST",
            &path,
            &h.admin(),
            Some(("text/plain", b"{\"code\":\"123456\"}".to_vec())),
        )
        .await;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], 3);
}

pub async fn rest_answers_unknown_paths_and_wrong_methods_with_the_error_body(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (status, headers, bytes) = h
        .rest_raw("GET", "/v2/nothing/here", &h.admin(), None)
        .await;
    assert_eq!(status, 404);
    let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
    assert_eq!(error.code, 5);
    let (status, headers, bytes) = h
        .rest_raw("PUT", "/v2/users/someone/totp", &h.admin(), None)
        .await;
    assert_eq!(status, 405);
    let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
    assert_eq!(error.code, 12);
}

pub async fn rest_refuses_oversized_bodies(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let body = format!(
        r#"{{"code":"123456","padding":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, headers, bytes) = h
        .rest_raw(
            "POST",
            &format!("/v2/users/{}/totp/verify", user.id),
            &h.admin(),
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(status, 413);
    let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
    assert_eq!(error.code, 3);
}

pub async fn rest_health_endpoints_answer(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (status, _, _) = h.rest_raw("GET", "/healthz", &Auth::None, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = h.rest_raw("GET", "/readyz", &Auth::None, None).await;
    assert_eq!(status, 200);
}

pub async fn metrics_count_requests_by_rpc_protocol_and_code(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_ready_totp().await;
    let wrong = if h.code(&secret, 1) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_is(
        h.check_totp(&h.admin(), &user.id, wrong).await,
        INVALID_CODE,
    );
    let (status, headers, body) = h.rest_raw("GET", "/metrics", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).unwrap();
    let protocol_label = match protocol {
        Protocol::Rest => "rest",
        Protocol::Grpc => "grpc",
        Protocol::GrpcWeb => "grpc-web",
        Protocol::Connect => "connect",
    };
    let count = |prefix: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(prefix) && labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let verified = format!("protocol=\"{protocol_label}\"");
    assert!(
        count(
            "totp_requests_total{",
            &["rpc=\"VerifyTOTPRegistration\"", &verified, "code=\"0\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_requests_total{",
            &["rpc=\"CheckTOTP\"", &verified, "code=\"3\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_code_outcomes_total{",
            &["rpc=\"check\"", "outcome=\"invalid\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_code_outcomes_total{",
            &["rpc=\"verify\"", "outcome=\"ok\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_request_duration_seconds_count{",
            &["rpc=\"CheckTOTP\"", &verified]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("totp_db_connections{state=\"idle\"}"),
        "{text}"
    );
}

pub async fn request_ids_are_taken_or_made_and_echoed(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/healthz", h.addr);
    let given = http
        .get(&url)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
    let made = http.get(&url).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_random_uuid(&id);
    let again = http.get(&url).send().await.unwrap();
    assert_ne!(
        again.headers()["x-request-id"],
        id.as_str(),
        "each made id is new"
    );

    // Native gRPC takes a shorter path through the server (no CORS, no gRPC-web): the same ids.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(h.grpc_channel().await);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "req-43".parse().unwrap());
    let given = health.check(request).await.unwrap();
    assert_eq!(given.metadata().get("x-request-id").unwrap(), "req-43");
    let made = health.check(HealthCheckRequest::default()).await.unwrap();
    let id = made
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_random_uuid(&id);
}

/// A lower-case hyphenated version 4 UUID of the RFC 9562 variant, as made for a request.
fn assert_random_uuid(id: &str) {
    let groups: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    assert_eq!(lengths, [8, 4, 4, 4, 12], "a hyphenated UUID: {id}");
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "lower-case hex: {id}"
    );
    assert!(groups[2].starts_with('4'), "version 4: {id}");
    assert!(
        groups[3].starts_with(['8', '9', 'a', 'b']),
        "RFC 9562 variant: {id}"
    );
}

pub async fn grpc_calls_to_unknown_services_and_methods_are_unimplemented(
    backend: Backend,
    protocol: Protocol,
) {
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    let h = harness(backend, protocol).await;
    let mut grpc = tonic::client::Grpc::new(h.grpc_channel().await);
    for path in [
        "/no.such.Service/Call",
        "/zitadel.user.v2.UserService/NoSuchMethod",
    ] {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<HealthCheckRequest, HealthCheckResponse, _>(
                tonic::Request::new(HealthCheckRequest::default()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}");
    }
}

pub async fn connect_answers_protobuf_bodies(backend: Backend, protocol: Protocol) {
    use prost::Message;
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let request = user_pb::GetUserByIdRequest {
        user_id: user.id.clone(),
    };
    let (status, headers, bytes) = h
        .rest_raw_typed(
            "POST",
            "/zitadel.user.v2.UserService/GetUserByID",
            &h.admin(),
            Some(("application/proto", request.encode_to_vec())),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/proto");
    let shown = user_pb::GetUserByIdResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(shown.user.unwrap().user_id, user.id);

    let missing = user_pb::GetUserByIdRequest {
        user_id: unique("nobody"),
    };
    let (status, _, bytes) = h
        .rest_raw_typed(
            "POST",
            "/zitadel.user.v2.UserService/GetUserByID",
            &h.admin(),
            Some(("application/proto", missing.encode_to_vec())),
        )
        .await;
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["code"], "not_found");
    assert_eq!(error["message"], "User could not be found (COMMAND-M9dsd)");
}

pub async fn the_enrolment_page_and_its_qr_codes_are_served(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (status, headers, body) = h.rest_raw("GET", "/ui/enroll", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(r#"<script src="/ui/enroll.js"></script>"#));
    assert!(
        !page.contains("<style") && page.matches("<script").count() == 1,
        "no inline code"
    );
    let (status, headers, script) = h.rest_raw("GET", "/ui/enroll.js", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let script = String::from_utf8(script).unwrap();
    for needle in [
        "zitadel.user.v2.UserService/RegisterTOTP",
        "zitadel.user.v2.UserService/VerifyTOTPRegistration",
        "application/grpc-web+proto",
        "/ui/qr",
    ] {
        assert!(script.contains(needle), "the page uses {needle}");
    }
    let (status, headers, _) = h.rest_raw("GET", "/ui/enroll.css", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    let user = h.new_user().await;
    let uri = h.register_totp(&h.admin(), &user.id).await.unwrap().uri;
    let (status, headers, svg) = h
        .rest_raw_typed(
            "POST",
            "/ui/qr",
            &Auth::None,
            Some(("text/plain", uri.into_bytes())),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/svg+xml");
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    assert!(
        !svg.contains("otpauth"),
        "the secret is drawn, not written, into the picture"
    );
}
