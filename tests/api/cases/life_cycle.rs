//! The life of a factor: register, verify, check, remove, lock and unlock, import; what each
//! appends and answers.

use std::time::Duration;

use totp_service::domain::clock::Clock;
use totp_service::domain::clock::SystemClock;
use totp_service::proto::zitadel::user::v2 as user_pb;

use super::*;
use crate::support::*;

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
