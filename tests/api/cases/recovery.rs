//! Recovery codes: GenerateRecoveryCodes and RemoveRecoveryCodes (ZITADEL's), CheckRecoveryCode
//! (ours): codes shown once and grouped for reading, added up to the maximum, used up once each,
//! wrong ones counted towards the lockout exactly like wrong TOTP codes.

use std::sync::Arc;

use tokio::task::JoinSet;

use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

use super::*;
use crate::support::*;

pub(crate) const NO_RECOVERY_CODES: (i32, &str, &str) =
    (5, "TOTP-rc0n", "The user has no recovery codes");
const TOO_MANY: (i32, &str, &str) = (
    9,
    "TOTP-rc0m",
    "The user would hold more recovery codes than allowed; remove the remaining ones first",
);

impl Harness {
    pub(crate) async fn generate_recovery_codes(
        &self,
        auth: &Auth,
        user_id: &str,
        count: i32,
    ) -> Result<user_pb::GenerateRecoveryCodesResponse, ApiError> {
        let request = user_pb::GenerateRecoveryCodesRequest {
            user_id: user_id.into(),
            count,
        };
        self.call(auth, request).await
    }

    pub(crate) async fn check_recovery_code(
        &self,
        auth: &Auth,
        user_id: &str,
        code: &str,
    ) -> Result<totp_pb::CheckRecoveryCodeResponse, ApiError> {
        let request = totp_pb::CheckRecoveryCodeRequest {
            user_id: user_id.into(),
            code: code.into(),
        };
        self.call(auth, request).await
    }

    async fn remove_recovery_codes(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::RemoveRecoveryCodesResponse, ApiError> {
        let request = user_pb::RemoveRecoveryCodesRequest {
            user_id: user_id.into(),
        };
        self.call(auth, request).await
    }

    async fn method_types(&self, user_id: &str) -> Vec<user_pb::AuthenticationMethodType> {
        let request = user_pb::ListAuthenticationMethodTypesRequest {
            user_id: user_id.into(),
        };
        let listed = self.call(&self.admin(), request).await.unwrap();
        listed
            .auth_method_types
            .into_iter()
            .map(|t| user_pb::AuthenticationMethodType::try_from(t).expect("a known type"))
            .collect()
    }

    async fn sequence(&self, user_id: &str) -> u64 {
        let shown = self.get_user(&self.admin(), user_id).await.unwrap();
        details(&shown.details).sequence
    }
}

/// `ABCD-EFGH-JKLM`: three groups of four RFC 4648 base32 characters (60 bits).
fn is_grouped_base32(code: &str) -> bool {
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 3
        && groups.iter().all(|group| {
            group.len() == 4
                && group
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
}

pub async fn recovery_codes_are_shown_once_used_once_and_removed(
    backend: Backend,
    protocol: Protocol,
) {
    use user_pb::AuthenticationMethodType::{RecoveryCode, Totp};
    let h = harness(backend, protocol).await;
    let (user, _) = h.user_with_ready_totp().await;
    let before = h.sequence(&user.id).await;

    let generated = h
        .generate_recovery_codes(&h.admin(), &user.id, 10)
        .await
        .unwrap();
    let codes = generated.recovery_codes;
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| is_grouped_base32(c)), "{codes:?}");
    let distinct: std::collections::HashSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), 10, "{codes:?}");
    assert_eq!(details(&generated.details).sequence, before + 1);
    assert_eq!(h.method_types(&user.id).await, [Totp, RecoveryCode]);

    // Typed as a person might: lower case, spaces for dashes.
    let typed = codes[0].to_lowercase().replace('-', " ");
    let checked = h
        .check_recovery_code(&h.admin(), &user.id, &typed)
        .await
        .unwrap();
    assert_eq!(checked.remaining, 9);
    assert_eq!(details(&checked.details).sequence, before + 2);
    assert_is(
        h.check_recovery_code(&h.admin(), &user.id, &codes[0]).await,
        INVALID_CODE,
    );

    // New codes are added to the remaining ones, up to the maximum (10).
    assert_is(
        h.generate_recovery_codes(&h.admin(), &user.id, 2).await,
        TOO_MANY,
    );
    let added = h
        .generate_recovery_codes(&h.admin(), &user.id, 1)
        .await
        .unwrap()
        .recovery_codes;
    assert_eq!(added.len(), 1);
    assert!(!codes.contains(&added[0]));
    let checked = h
        .check_recovery_code(&h.admin(), &user.id, &added[0])
        .await
        .unwrap();
    assert_eq!(checked.remaining, 9);
    let checked = h
        .check_recovery_code(&h.admin(), &user.id, &codes[9])
        .await
        .unwrap();
    assert_eq!(checked.remaining, 8);

    h.remove_recovery_codes(&h.admin(), &user.id).await.unwrap();
    assert_eq!(h.method_types(&user.id).await, [Totp]);
    assert_is(
        h.check_recovery_code(&h.admin(), &user.id, &codes[1]).await,
        NO_RECOVERY_CODES,
    );
    assert_is(
        h.remove_recovery_codes(&h.admin(), &user.id).await,
        NO_RECOVERY_CODES,
    );
    // added, check, failed check, added, check, check, removed.
    assert_eq!(h.sequence(&user.id).await, before + 7);
}

pub async fn recovery_codes_need_a_count_in_range_the_user_and_the_permission(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    for count in [0, -1, 11] {
        h.generate_recovery_codes(&h.admin(), &user.id, count)
            .await
            .unwrap_err()
            .assert_validation(
                "invalid GenerateRecoveryCodesRequest.Count: value must be inside range [1, 10]",
            );
    }
    h.check_recovery_code(&h.admin(), &user.id, "")
        .await
        .unwrap_err()
        .assert_validation(
            "invalid CheckRecoveryCodeRequest.Code: value length must be between 1 and 200 runes, inclusive",
        );
    let nobody = unique("nobody");
    assert_is(
        h.generate_recovery_codes(&h.admin(), &nobody, 1).await,
        NOT_FOUND_USER,
    );
    assert_is(
        h.check_recovery_code(&h.admin(), &nobody, "AAAA-AAAA-AAAA")
            .await,
        NOT_FOUND_USER,
    );

    // CheckRecoveryCode takes session.write, as CheckTOTP; generating takes
    // user.credential.write, removing user.write, as for a TOTP; the user may do each itself.
    let login = h.token("login-service", &[("session.write", "*")]);
    assert_is(
        h.generate_recovery_codes(&login, &user.id, 1).await,
        NO_PERMISSION,
    );
    let itself = h.token(&user.id, &[]);
    let codes = h
        .generate_recovery_codes(&itself, &user.id, 2)
        .await
        .unwrap()
        .recovery_codes;
    let stranger = h.token("stranger", &[("user.credential.write", "other-org")]);
    assert_is(
        h.check_recovery_code(&stranger, &user.id, &codes[0]).await,
        NO_PERMISSION,
    );
    let checked = h
        .check_recovery_code(&login, &user.id, &codes[0])
        .await
        .unwrap();
    assert_eq!(checked.remaining, 1);
    assert_is(
        h.remove_recovery_codes(&login, &user.id).await,
        NO_PERMISSION,
    );
    h.remove_recovery_codes(&itself, &user.id).await.unwrap();
}

pub async fn wrong_recovery_codes_count_towards_the_lockout_like_wrong_totp_codes(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_ready_totp().await;
    let codes = h
        .generate_recovery_codes(&h.admin(), &user.id, 3)
        .await
        .unwrap()
        .recovery_codes;
    let start = h.sequence(&user.id).await;

    // Five failures of either kind lock the user (max_attempts 5): each appends one
    // check.failed, the fifth also user.locked.
    let wrong_totp = if h.code(&secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_is(
        h.check_totp(&h.admin(), &user.id, wrong_totp).await,
        INVALID_CODE,
    );
    for wrong in ["AAAA-AAAA-AAAA", "not a code", "AAAA-AAAA-AAAB"] {
        assert_is(
            h.check_recovery_code(&h.admin(), &user.id, wrong).await,
            INVALID_CODE,
        );
    }
    assert_eq!(h.sequence(&user.id).await, start + 4);
    assert_is(
        h.check_totp(&h.admin(), &user.id, wrong_totp).await,
        INVALID_CODE,
    );
    assert_eq!(
        h.sequence(&user.id).await,
        start + 6,
        "check.failed and user.locked"
    );

    // Locked: the right recovery code is not evaluated, nothing is appended or used up.
    assert_is(
        h.check_recovery_code(&h.admin(), &user.id, &codes[0]).await,
        USER_LOCKED,
    );
    assert_eq!(h.sequence(&user.id).await, start + 6);
    h.unlock_user(&h.admin(), &user.id).await.unwrap();
    let checked = h
        .check_recovery_code(&h.admin(), &user.id, &codes[0])
        .await
        .unwrap();
    assert_eq!(checked.remaining, 2);

    // A right code clears the count: four more failures do not lock.
    for _ in 0..4 {
        assert_is(
            h.check_recovery_code(&h.admin(), &user.id, "AAAA-AAAA-AAAA")
                .await,
            INVALID_CODE,
        );
    }
    h.check_recovery_code(&h.admin(), &user.id, &codes[1])
        .await
        .unwrap();
}

/// One code sent many times at once, through two instances on one database: used up once.
pub async fn one_recovery_code_sent_in_parallel_is_accepted_once(
    backend: Backend,
    protocol: Protocol,
) {
    let mut options = Options::new(backend, protocol);
    options.max_attempts = 100;
    let first = Arc::new(Harness::start(options.clone()).await);
    let second = Arc::new(first.start_beside(options).await);
    let user = first.new_user().await;
    let codes = first
        .generate_recovery_codes(&first.admin(), &user.id, 3)
        .await
        .unwrap()
        .recovery_codes;

    let mut calls = JoinSet::new();
    for index in 0..8 {
        let h = if index % 2 == 0 { &first } else { &second }.clone();
        let (user_id, code) = (user.id.clone(), codes[0].clone());
        calls.spawn(async move { h.check_recovery_code(&h.admin(), &user_id, &code).await });
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    while let Some(result) = calls.join_next().await {
        match result.expect("call task") {
            Ok(answer) => accepted.push(answer.remaining),
            Err(error) => {
                error.assert_rejected(INVALID_CODE.0, INVALID_CODE.1, INVALID_CODE.2);
                refused += 1;
            }
        }
    }
    assert_eq!(accepted, [2], "exactly one success");
    assert_eq!(refused, 7);
    let checked = second
        .check_recovery_code(&second.admin(), &user.id, &codes[1])
        .await
        .unwrap();
    assert_eq!(checked.remaining, 1);
}
