//! `zitadel.user.v2beta.UserService`: the same life as v2 with v2beta's own messages, paths and
//! package, and the same answers and errors. (`@zitadel/node`'s own client runs it too, in
//! `tests/sdk`.)

use totp_service::proto::zitadel::object::v2beta as object_beta;
use totp_service::proto::zitadel::user::v2beta as beta;

use super::*;
use crate::support::*;

fn new_human(user: &TestUser) -> beta::AddHumanUserRequest {
    beta::AddHumanUserRequest {
        user_id: Some(user.id.clone()),
        profile: Some(beta::SetHumanProfile {
            given_name: "Beta".into(),
            family_name: "User".into(),
            ..Default::default()
        }),
        email: Some(beta::SetHumanEmail {
            email: user.email.clone(),
            verification: None,
        }),
        ..Default::default()
    }
}

fn test_user() -> TestUser {
    TestUser {
        id: unique("beta"),
        org: unique("org"),
        email: format!("{}@example.com", unique("mail")),
    }
}

pub async fn the_v2beta_service_runs_a_whole_life_with_its_own_messages(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let admin = h.admin();
    let user = test_user();
    // The deprecated `organisation` still names the organisation.
    let added = h
        .call(
            &admin,
            beta::AddHumanUserRequest {
                organisation: Some(object_beta::Organisation {
                    org: Some(object_beta::organisation::Org::OrgId(user.org.clone())),
                }),
                ..new_human(&user)
            },
        )
        .await
        .unwrap();
    assert_eq!(added.user_id, user.id);
    let details = added.details.unwrap();
    assert_eq!(
        (details.sequence, details.resource_owner.as_str()),
        (1, user.org.as_str())
    );

    let id = || user.id.clone();
    let registered = h
        .call(&admin, beta::RegisterTotpRequest { user_id: id() })
        .await
        .unwrap();
    assert!(registered.uri.starts_with("otpauth://totp/"));
    // A code from three steps back is outside the window: refused with v2's error.
    assert_is(
        h.call(
            &admin,
            beta::VerifyTotpRegistrationRequest {
                user_id: id(),
                code: h.code(&registered.secret, -3),
            },
        )
        .await,
        INVALID_CODE,
    );
    let verified = h
        .call(
            &admin,
            beta::VerifyTotpRegistrationRequest {
                user_id: id(),
                code: h.code(&registered.secret, 0),
            },
        )
        .await
        .unwrap();
    assert_eq!(verified.details.unwrap().sequence, 4);
    let methods = h
        .call(
            &admin,
            beta::ListAuthenticationMethodTypesRequest { user_id: id() },
        )
        .await
        .unwrap();
    assert_eq!(
        methods.auth_method_types,
        [beta::AuthenticationMethodType::Totp as i32]
    );
    assert_eq!(methods.details.unwrap().total_result, 1);
    let factors = h
        .call(
            &admin,
            beta::ListAuthenticationFactorsRequest {
                user_id: id(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        factors.result,
        [beta::AuthFactor {
            state: beta::AuthFactorState::Ready as i32,
            r#type: Some(beta::auth_factor::Type::Otp(beta::AuthFactorOtp {})),
        }]
    );

    h.call(&admin, beta::LockUserRequest { user_id: id() })
        .await
        .unwrap();
    let got = h
        .call(&admin, beta::GetUserByIdRequest { user_id: id() })
        .await
        .unwrap();
    let shown = got.user.unwrap();
    assert_eq!(shown.state, beta::UserState::Locked as i32);
    assert_eq!(shown.human.unwrap().email.unwrap().email, user.email);
    h.call(&admin, beta::UnlockUserRequest { user_id: id() })
        .await
        .unwrap();
    h.call(&admin, beta::RemoveTotpRequest { user_id: id() })
        .await
        .unwrap();
    h.call(&admin, beta::DeleteUserRequest { user_id: id() })
        .await
        .unwrap();
    assert_is(
        h.call(&admin, beta::GetUserByIdRequest { user_id: id() })
            .await,
        NOT_FOUND_USER,
    );
}

/// A user named by the deprecated `organisation`, by domain (which this service does not take).
fn by_domain_request(user: &TestUser) -> beta::AddHumanUserRequest {
    beta::AddHumanUserRequest {
        organisation: Some(object_beta::Organisation {
            org: Some(object_beta::organisation::Org::OrgDomain(
                "acme.example".into(),
            )),
        }),
        ..new_human(user)
    }
}

pub async fn v2beta_refuses_as_v2_does(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = test_user();
    assert_is(
        h.call(&h.admin(), by_domain_request(&user)).await,
        (
            3,
            "USER-o1rg4",
            "Organization must be given by org_id, org_domain is not supported (use org_id)",
        ),
    );
    // `organization` wins over the deprecated field when both are set.
    let both = beta::AddHumanUserRequest {
        organization: Some(object_beta::Organization {
            org: Some(object_beta::organization::Org::OrgId(user.org.clone())),
        }),
        ..by_domain_request(&user)
    };
    let added = h.call(&h.admin(), both).await.unwrap();
    assert_eq!(added.details.unwrap().resource_owner, user.org);
    let stranger = h.token("stranger", &[]);
    assert_is(
        h.call(
            &stranger,
            beta::RegisterTotpRequest {
                user_id: user.id.clone(),
            },
        )
        .await,
        NO_PERMISSION,
    );
}
