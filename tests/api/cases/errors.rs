//! Refusals of what cannot be done: unknown and deleted users, fields that break the rules, a
//! user added twice or without an organisation.

use totp_service::proto::zitadel::object::v2 as object_pb;

use super::*;
use crate::support::*;

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
