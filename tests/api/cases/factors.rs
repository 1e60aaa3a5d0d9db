//! ListAuthenticationFactors: the TOTP as `otp`, not ready while pending and ready once verified,
//! filtered by kind and state as ZITADEL filters (ready factors when no state is asked for).

use totp_service::proto::zitadel::user::v2 as user_pb;

use super::*;
use crate::support::*;

use user_pb::AuthFactorState::{NotReady, Ready};

impl Harness {
    /// The states of the `otp` factors listed for `user_id` with these filters.
    async fn otp_factors(
        &self,
        user_id: &str,
        kinds: &[user_pb::AuthFactors],
        states: &[user_pb::AuthFactorState],
    ) -> Vec<user_pb::AuthFactorState> {
        let request = user_pb::ListAuthenticationFactorsRequest {
            user_id: user_id.into(),
            auth_factors: kinds.iter().map(|&kind| kind as i32).collect(),
            states: states.iter().map(|&state| state as i32).collect(),
        };
        let listed = self.call(&self.admin(), request).await.unwrap();
        listed
            .result
            .into_iter()
            .map(|factor| {
                assert!(
                    matches!(factor.r#type, Some(user_pb::auth_factor::Type::Otp(_))),
                    "the TOTP is listed as otp: {factor:?}"
                );
                user_pb::AuthFactorState::try_from(factor.state).expect("a known state")
            })
            .collect()
    }
}

pub async fn authentication_factors_show_the_totp_as_otp_in_its_state(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let both = [NotReady, Ready];
    assert_eq!(h.otp_factors(&user.id, &[], &both).await, []);

    let secret = h.register_totp(&h.admin(), &user.id).await.unwrap().secret;
    assert_eq!(
        h.otp_factors(&user.id, &[], &[]).await,
        [],
        "ready only by default"
    );
    assert_eq!(h.otp_factors(&user.id, &[], &[NotReady]).await, [NotReady]);
    assert_eq!(h.otp_factors(&user.id, &[], &both).await, [NotReady]);

    h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
    assert_eq!(h.otp_factors(&user.id, &[], &[]).await, [Ready]);
    assert_eq!(h.otp_factors(&user.id, &[], &[NotReady]).await, []);
    let otp = [user_pb::AuthFactors::Otp];
    assert_eq!(h.otp_factors(&user.id, &otp, &both).await, [Ready]);
    let others = [user_pb::AuthFactors::U2f, user_pb::AuthFactors::OtpSms];
    assert_eq!(h.otp_factors(&user.id, &others, &both).await, []);

    h.remove_totp(&h.admin(), &user.id).await.unwrap();
    assert_eq!(h.otp_factors(&user.id, &[], &both).await, []);
}

pub async fn authentication_factors_need_the_user_and_the_permission_to_read_it(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let request = |user_id: &str| user_pb::ListAuthenticationFactorsRequest {
        user_id: user_id.into(),
        ..Default::default()
    };
    assert_is(
        h.call(&h.admin(), request(&unique("nobody"))).await,
        NOT_FOUND_USER,
    );
    let stranger = h.token("stranger", &[("user.write", "*")]);
    assert_is(h.call(&stranger, request(&user.id)).await, NO_PERMISSION);
    let itself = h.token(&user.id, &[]);
    h.call(&itself, request(&user.id)).await.unwrap();
}

/// REST only: the filters travel in the query string, a parameter per value, by either name.
pub async fn authentication_factor_filters_in_the_query_string_are_read_or_refused(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, _) = h.user_with_pending_totp().await;
    let path = |query: &str| {
        format!(
            "/v2/users/{}/authentication_factors/_search?{query}",
            user.id
        )
    };
    for query in [
        "states=AUTH_FACTOR_STATE_NOT_READY",
        "auth_factors=OTP&states=AUTH_FACTOR_STATE_READY&states=AUTH_FACTOR_STATE_NOT_READY",
        "authFactors=OTP&states=1",
    ] {
        let (status, _, body) = h.rest_raw("POST", &path(query), &h.admin(), None).await;
        assert_eq!(status, 200, "{query}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["result"],
            serde_json::json!([{ "state": "AUTH_FACTOR_STATE_NOT_READY", "otp": {} }]),
            "{query}"
        );
    }
    let (status, headers, body) = h
        .rest_raw("POST", &path("states=NOT_A_STATE"), &h.admin(), None)
        .await;
    rest_error_for_tests(status, &headers, &body)
        .assert_validation("invalid query parameters for this request");
}
