//! ImportTOTP: a credential from another system keeps its algorithm, digits and period for every
//! later check; it is ready at once unless asked to wait; a refused parameter is named.

use totp_service::domain::totp::{self, Algorithm, Parameters, Secret};
use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

use super::*;
use crate::support::*;

/// A random 32-byte secret, as base32.
fn random_secret() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    Secret::from_bytes(bytes).to_base32()
}

impl Harness {
    /// The code of `secret` under `parameters` for the step `offset` steps from the service's
    /// current one.
    fn code_with(&self, secret_base32: &str, parameters: Parameters, offset: i64) -> String {
        let secret = Secret::from_base32(secret_base32).expect("base32 secret");
        let step = totp::step_at(self.now().unix_seconds(), parameters.period) + offset;
        totp::code_for_step(&secret, step, parameters.digits, parameters.algorithm)
    }

    async fn import_totp(
        &self,
        request: totp_pb::ImportTotpRequest,
    ) -> Result<totp_pb::ImportTotpResponse, ApiError> {
        self.call(&self.admin(), request).await
    }

    async fn sequence_of(&self, user_id: &str) -> u64 {
        let user = self.get_user(&self.admin(), user_id).await.unwrap();
        details(&user.details).sequence
    }
}

pub async fn an_imported_uri_is_ready_at_once_and_checked_with_its_parameters(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let secret = random_secret();
    let imported = h
        .import_totp(totp_pb::ImportTotpRequest {
            user_id: user.id.clone(),
            uri: format!(
                "otpauth://totp/Keycloak:{}?secret={secret}&algorithm=SHA256&digits=8&period=60&issuer=Keycloak",
                user.email
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        details(&imported.details).sequence,
        3,
        "user.human.added, then mfa.otp.added and mfa.otp.verified"
    );
    let parameters = Parameters {
        algorithm: Algorithm::Sha256,
        digits: 8,
        period: 60,
    };
    assert_is(
        h.check_totp(&h.admin(), &user.id, &h.code(&secret, 0))
            .await,
        INVALID_CODE,
    );
    let checked = h
        .check_totp(&h.admin(), &user.id, &h.code_with(&secret, parameters, 0))
        .await
        .unwrap();
    assert_eq!(details(&checked.details).sequence, 5);
    assert_is(
        h.check_totp(&h.admin(), &user.id, &h.code_with(&secret, parameters, 0))
            .await,
        ALREADY_USED,
    );
    let methods = h.list_methods(&h.admin(), &user.id).await.unwrap();
    assert_eq!(
        methods.auth_method_types,
        [user_pb::AuthenticationMethodType::Totp as i32],
        "TOTP is listed at once"
    );
}

pub async fn an_import_by_parts_takes_the_usual_defaults_and_may_wait_for_a_first_code(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let secret = random_secret();
    let imported = h
        .import_totp(totp_pb::ImportTotpRequest {
            user_id: user.id.clone(),
            secret: secret.clone(),
            algorithm: totp_pb::TotpAlgorithm::Sha512 as i32,
            pending: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(details(&imported.details).sequence, 2, "mfa.otp.added only");
    let parameters = Parameters {
        algorithm: Algorithm::Sha512,
        ..Parameters::ISSUED
    };
    assert_is(
        h.check_totp(&h.admin(), &user.id, &h.code_with(&secret, parameters, 0))
            .await,
        (
            9,
            "COMMAND-3Mif9s",
            "Multifactor OTP (OneTimePassword) isn't ready",
        ),
    );
    h.verify_totp(&h.admin(), &user.id, &h.code_with(&secret, parameters, 0))
        .await
        .unwrap();
    h.check_totp(&h.admin(), &user.id, &h.code_with(&secret, parameters, 1))
        .await
        .unwrap();
}

pub async fn import_replaces_a_pending_totp_and_is_refused_over_a_ready_one(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, registered) = h.user_with_pending_totp().await;
    let secret = random_secret();
    let request = totp_pb::ImportTotpRequest {
        user_id: user.id.clone(),
        secret: secret.clone(),
        ..Default::default()
    };
    h.import_totp(request.clone()).await.unwrap();
    assert_is(
        h.verify_totp(&h.admin(), &user.id, &h.code(&registered, 0))
            .await,
        (
            9,
            "COMMAND-qx4ls",
            "Multifactor OTP (OneTimePassword) is already set up",
        ),
    );
    h.check_totp(&h.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
    let before = h.sequence_of(&user.id).await;
    assert_is(
        h.import_totp(request).await,
        (
            6,
            "COMMAND-do9se",
            "Multifactor OTP (OneTimePassword) is already set up",
        ),
    );
    assert_eq!(h.sequence_of(&user.id).await, before, "nothing appended");
}

pub async fn import_refuses_each_bad_parameter_by_name_and_appends_nothing(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let secret = random_secret();
    let with_uri = |query: &str| totp_pb::ImportTotpRequest {
        user_id: user.id.clone(),
        uri: format!("otpauth://totp/alice?secret={secret}&{query}"),
        ..Default::default()
    };
    let with_parts = |digits: u32, period: u32| totp_pb::ImportTotpRequest {
        user_id: user.id.clone(),
        secret: secret.clone(),
        digits,
        period,
        ..Default::default()
    };
    let source = (
        3,
        "TOTP-imp0x",
        "ImportTOTP takes either uri or secret (with algorithm, digits and period), not both",
    );
    let uri = (3, "TOTP-imp0u", "uri must be an otpauth://totp/ URI");
    let secret_refused = (
        3,
        "TOTP-imp0s",
        "secret must be base32 of at least 16 bytes",
    );
    let algorithm = (3, "TOTP-imp0a", "algorithm must be SHA1, SHA256 or SHA512");
    let digits = (3, "TOTP-imp0d", "digits must be 6 or 8");
    let period = (3, "TOTP-imp0p", "period must be between 15 and 120 seconds");
    let cases = [
        (
            totp_pb::ImportTotpRequest {
                user_id: user.id.clone(),
                ..Default::default()
            },
            source,
        ),
        (
            totp_pb::ImportTotpRequest {
                secret: secret.clone(),
                ..with_uri("")
            },
            source,
        ),
        (
            totp_pb::ImportTotpRequest {
                digits: 8,
                ..with_uri("")
            },
            source,
        ),
        (
            totp_pb::ImportTotpRequest {
                user_id: user.id.clone(),
                uri: format!("otpauth://hotp/alice?secret={secret}&counter=1"),
                ..Default::default()
            },
            uri,
        ),
        (with_uri("algorithm=MD5"), algorithm),
        (with_uri("digits=7"), digits),
        (with_uri("period=10"), period),
        (with_uri("period=121"), period),
        (
            totp_pb::ImportTotpRequest {
                user_id: user.id.clone(),
                uri: "otpauth://totp/alice?secret=GEZDGNBVGY3TQOJQ".into(),
                ..Default::default()
            },
            secret_refused,
        ),
        (with_parts(7, 0), digits),
        (with_parts(0, 14), period),
        (
            totp_pb::ImportTotpRequest {
                secret: "GEZDGNBVGY3TQOJQ".into(),
                ..with_parts(0, 0)
            },
            secret_refused,
        ),
        (
            totp_pb::ImportTotpRequest {
                secret: "not base32!".into(),
                ..with_parts(0, 0)
            },
            secret_refused,
        ),
    ];
    let before = h.sequence_of(&user.id).await;
    for (request, refusal) in cases {
        let shown = format!("{request:?}");
        match h.import_totp(request).await {
            Ok(_) => panic!("{shown} was accepted"),
            Err(error) => error.assert_rejected(refusal.0, refusal.1, refusal.2),
        }
    }
    assert_eq!(h.sequence_of(&user.id).await, before, "nothing appended");
}
