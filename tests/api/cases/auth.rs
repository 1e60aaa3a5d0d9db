//! Who may call: tokens, permissions in an organisation or every organisation, the user itself.

use totp_service::domain::clock::Clock;
use totp_service::domain::clock::SystemClock;

use super::*;
use crate::support::*;

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
