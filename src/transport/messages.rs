//! Every RPC once, in protobuf terms: request message in, response message out. The REST and gRPC
//! handlers both call these, so the two protocols cannot drift apart. Validation happens here,
//! turning raw fields into domain types before the domain sees them.

use crate::proto::Timestamp as ProtoTimestamp;

use crate::domain::Service;
use crate::domain::clock::Timestamp;
use crate::domain::error::{self, Error};
use crate::domain::service::NewHuman;
use crate::domain::totp::{self, Algorithm, Parameters, Secret};
use crate::domain::types::{
    Caller, Details, Gender, Profile, TotpCode, TotpState, UserId, check_length, check_no_control,
    check_text,
};
use crate::proto::totpservice::v1 as totp_pb;
use crate::proto::zitadel::object::v2 as object_pb;
use crate::proto::zitadel::user::v2 as user_pb;

/// A domain time as a protobuf timestamp.
pub fn timestamp(at: Timestamp) -> ProtoTimestamp {
    ProtoTimestamp {
        seconds: at.0.div_euclid(1_000_000),
        nanos: (at.0.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Validates the request's user id and names it in the request's log span.
fn user_id(raw: &str, request: &str) -> Result<UserId, Error> {
    let user_id = UserId::parse(raw, request)?;
    super::observe::note_user(user_id.as_str());
    Ok(user_id)
}

fn details(details: Details) -> Option<object_pb::Details> {
    Some(object_pb::Details {
        sequence: details.sequence,
        change_date: Some(timestamp(details.change_date)),
        resource_owner: details.resource_owner,
        creation_date: None,
    })
}

pub async fn register_totp(
    service: &Service,
    caller: &Caller,
    request: user_pb::RegisterTotpRequest,
) -> Result<user_pb::RegisterTotpResponse, Error> {
    let user_id = user_id(&request.user_id, "RegisterTOTPRequest")?;
    let registration = service.register_totp(caller, &user_id).await?;
    Ok(user_pb::RegisterTotpResponse {
        details: details(registration.details),
        uri: registration.uri,
        secret: registration.secret.to_base32(),
    })
}

pub async fn verify_totp_registration(
    service: &Service,
    caller: &Caller,
    request: user_pb::VerifyTotpRegistrationRequest,
) -> Result<user_pb::VerifyTotpRegistrationResponse, Error> {
    let user_id = user_id(&request.user_id, "VerifyTOTPRegistrationRequest")?;
    let code = TotpCode::parse(&request.code, "VerifyTOTPRegistrationRequest")?;
    let result = service
        .verify_totp_registration(caller, &user_id, &code)
        .await?;
    Ok(user_pb::VerifyTotpRegistrationResponse {
        details: details(result),
    })
}

pub async fn remove_totp(
    service: &Service,
    caller: &Caller,
    request: user_pb::RemoveTotpRequest,
) -> Result<user_pb::RemoveTotpResponse, Error> {
    let user_id = user_id(&request.user_id, "RemoveTOTPRequest")?;
    let result = service.remove_totp(caller, &user_id).await?;
    Ok(user_pb::RemoveTotpResponse {
        details: details(result),
    })
}

pub async fn check_totp(
    service: &Service,
    caller: &Caller,
    request: totp_pb::CheckTotpRequest,
) -> Result<totp_pb::CheckTotpResponse, Error> {
    let user_id = user_id(&request.user_id, "CheckTOTPRequest")?;
    let code = TotpCode::parse(&request.code, "CheckTOTPRequest")?;
    let result = service.check_totp(caller, &user_id, &code).await?;
    Ok(totp_pb::CheckTotpResponse {
        details: details(result),
    })
}

pub async fn import_totp(
    service: &Service,
    caller: &Caller,
    request: totp_pb::ImportTotpRequest,
) -> Result<totp_pb::ImportTotpResponse, Error> {
    const REQUEST: &str = "ImportTOTPRequest";
    let user_id = user_id(&request.user_id, REQUEST)?;
    // Either may be empty (the other names the credential); a URI carries a label and an issuer
    // beside the secret, so it may be longer than other fields.
    for (value, field, longest) in [
        (&request.uri, "Uri", 2048),
        (&request.secret, "Secret", 200),
    ] {
        if value.chars().count() > longest {
            return Err(Error::Validation(format!(
                "invalid {REQUEST}.{field}: value length must be at most {longest} runes"
            )));
        }
    }
    let given_parameters = request.algorithm != 0 || request.digits != 0 || request.period != 0;
    let imported = match (request.uri.is_empty(), request.secret.is_empty()) {
        (false, true) if !given_parameters => totp::parse_otpauth_uri(&request.uri),
        (true, false) => {
            let algorithm = match totp_pb::TotpAlgorithm::try_from(request.algorithm) {
                Ok(totp_pb::TotpAlgorithm::Unspecified | totp_pb::TotpAlgorithm::Sha1) => {
                    Algorithm::Sha1
                }
                Ok(totp_pb::TotpAlgorithm::Sha256) => Algorithm::Sha256,
                Ok(totp_pb::TotpAlgorithm::Sha512) => Algorithm::Sha512,
                Err(_) => return Err(error::IMPORT_ALGORITHM.into()),
            };
            let secret =
                Secret::from_base32(&request.secret).ok_or(Error::from(error::IMPORT_SECRET))?;
            let or = |given: u32, usual: u32| if given == 0 { usual } else { given };
            totp::import(
                secret,
                Parameters {
                    algorithm,
                    digits: or(request.digits, totp::DIGITS),
                    period: or(request.period, totp::PERIOD),
                },
            )
        }
        _ => return Err(error::IMPORT_SOURCE.into()),
    }?;
    let result = service
        .import_totp(caller, &user_id, imported, request.pending)
        .await?;
    Ok(totp_pb::ImportTotpResponse {
        details: details(result),
    })
}

pub async fn generate_recovery_codes(
    service: &Service,
    caller: &Caller,
    request: user_pb::GenerateRecoveryCodesRequest,
) -> Result<user_pb::GenerateRecoveryCodesResponse, Error> {
    let user_id = user_id(&request.user_id, "GenerateRecoveryCodesRequest")?;
    // A negative count is below the range the service names in its refusal.
    let count = u32::try_from(request.count).unwrap_or(0);
    let (result, codes) = service
        .generate_recovery_codes(caller, &user_id, count)
        .await?;
    Ok(user_pb::GenerateRecoveryCodesResponse {
        details: details(result),
        recovery_codes: codes.iter().map(|c| c.expose().to_owned()).collect(),
    })
}

pub async fn remove_recovery_codes(
    service: &Service,
    caller: &Caller,
    request: user_pb::RemoveRecoveryCodesRequest,
) -> Result<user_pb::RemoveRecoveryCodesResponse, Error> {
    let user_id = user_id(&request.user_id, "RemoveRecoveryCodesRequest")?;
    let result = service.remove_recovery_codes(caller, &user_id).await?;
    Ok(user_pb::RemoveRecoveryCodesResponse {
        details: details(result),
    })
}

pub async fn check_recovery_code(
    service: &Service,
    caller: &Caller,
    request: totp_pb::CheckRecoveryCodeRequest,
) -> Result<totp_pb::CheckRecoveryCodeResponse, Error> {
    let user_id = user_id(&request.user_id, "CheckRecoveryCodeRequest")?;
    let code = TotpCode::parse(&request.code, "CheckRecoveryCodeRequest")?;
    let (result, remaining) = service.check_recovery_code(caller, &user_id, &code).await?;
    Ok(totp_pb::CheckRecoveryCodeResponse {
        details: details(result),
        remaining: remaining as u32,
    })
}

pub async fn add_human_user(
    service: &Service,
    caller: &Caller,
    request: user_pb::AddHumanUserRequest,
) -> Result<user_pb::AddHumanUserResponse, Error> {
    const REQUEST: &str = "AddHumanUserRequest";
    let user_id = request
        .user_id
        .as_deref()
        .map(|id| UserId::parse(id, REQUEST))
        .transpose()?;
    if let Some(username) = &request.username {
        check_text(username, REQUEST, "Username")?;
    }
    if let Some(secret) = &request.totp_secret {
        check_length(secret, REQUEST, "TotpSecret")?;
    }
    let profile = request.profile.ok_or_else(|| {
        Error::Validation(format!("invalid {REQUEST}.Profile: value is required"))
    })?;
    check_text(&profile.given_name, "SetHumanProfile", "GivenName")?;
    check_text(&profile.family_name, "SetHumanProfile", "FamilyName")?;
    for (value, field) in [
        (&profile.nick_name, "NickName"),
        (&profile.display_name, "DisplayName"),
        (&profile.preferred_language, "PreferredLanguage"),
    ] {
        if let Some(value) = value {
            check_no_control(value, "SetHumanProfile", field)?;
        }
    }
    let email = request
        .email
        .ok_or_else(|| Error::Validation(format!("invalid {REQUEST}.Email: value is required")))?;
    check_text(&email.email, "SetHumanEmail", "Email")?;

    let org_id = match request.organization.and_then(|o| o.org) {
        None => None,
        Some(object_pb::organization::Org::OrgId(id)) => {
            check_text(&id, "Organization", "OrgId")?;
            Some(id)
        }
        Some(object_pb::organization::Org::OrgDomain(_)) => {
            return Err(error::ORG_DOMAIN_UNSUPPORTED.into());
        }
    };
    let totp_secret = request
        .totp_secret
        .map(|text| Secret::from_base32(&text).ok_or(Error::Rejected(error::TOTP_SECRET_INVALID)))
        .transpose()?;
    let email_verified = matches!(
        email.verification,
        Some(user_pb::set_human_email::Verification::IsVerified(true))
    );
    let new = NewHuman {
        user_id,
        username: request.username,
        org_id,
        profile: Profile {
            given_name: profile.given_name,
            family_name: profile.family_name,
            nick_name: profile.nick_name,
            display_name: profile.display_name,
            preferred_language: profile.preferred_language,
            gender: profile.gender.map(Gender),
        },
        email: email.email,
        email_verified,
        totp_secret,
    };
    let (user_id, result) = service.add_human_user(caller, new).await?;
    Ok(user_pb::AddHumanUserResponse {
        user_id,
        details: details(result),
    })
}

pub async fn get_user_by_id(
    service: &Service,
    caller: &Caller,
    request: user_pb::GetUserByIdRequest,
) -> Result<user_pb::GetUserByIdResponse, Error> {
    let user_id = user_id(&request.user_id, "GetUserByIDRequest")?;
    let view = service.get_user(caller, &user_id).await?;
    let user = view.user;
    let state = if view.locked {
        user_pb::UserState::Locked
    } else {
        user_pb::UserState::Active
    };
    let profile = user.profile;
    Ok(user_pb::GetUserByIdResponse {
        details: details(view.details.clone()),
        user: Some(user_pb::User {
            user_id: user.user_id,
            state: state as i32,
            login_names: vec![user.username.clone()],
            preferred_login_name: user.username.clone(),
            username: user.username,
            human: Some(user_pb::HumanUser {
                profile: Some(user_pb::HumanProfile {
                    given_name: profile.given_name,
                    family_name: profile.family_name,
                    nick_name: profile.nick_name,
                    display_name: profile.display_name,
                    preferred_language: profile.preferred_language,
                    gender: profile.gender.map(|g| g.0),
                    avatar_url: String::new(),
                }),
                email: Some(user_pb::HumanEmail {
                    email: user.email,
                    is_verified: user.email_verified,
                }),
            }),
            details: details(view.details),
        }),
    })
}

pub async fn delete_user(
    service: &Service,
    caller: &Caller,
    request: user_pb::DeleteUserRequest,
) -> Result<user_pb::DeleteUserResponse, Error> {
    let user_id = user_id(&request.user_id, "DeleteUserRequest")?;
    let result = service.delete_user(caller, &user_id).await?;
    Ok(user_pb::DeleteUserResponse {
        details: details(result),
    })
}

pub async fn lock_user(
    service: &Service,
    caller: &Caller,
    request: user_pb::LockUserRequest,
) -> Result<user_pb::LockUserResponse, Error> {
    let user_id = user_id(&request.user_id, "LockUserRequest")?;
    let result = service.lock_user(caller, &user_id).await?;
    Ok(user_pb::LockUserResponse {
        details: details(result),
    })
}

pub async fn unlock_user(
    service: &Service,
    caller: &Caller,
    request: user_pb::UnlockUserRequest,
) -> Result<user_pb::UnlockUserResponse, Error> {
    let user_id = user_id(&request.user_id, "UnlockUserRequest")?;
    let result = service.unlock_user(caller, &user_id).await?;
    Ok(user_pb::UnlockUserResponse {
        details: details(result),
    })
}

pub async fn list_authentication_method_types(
    service: &Service,
    caller: &Caller,
    request: user_pb::ListAuthenticationMethodTypesRequest,
) -> Result<user_pb::ListAuthenticationMethodTypesResponse, Error> {
    let user_id = user_id(&request.user_id, "ListAuthenticationMethodTypesRequest")?;
    let methods = service
        .list_authentication_methods(caller, &user_id)
        .await?;
    let mut types = Vec::new();
    if methods.totp == Some(TotpState::Ready) {
        types.push(user_pb::AuthenticationMethodType::Totp as i32);
    }
    if methods.recovery_codes > 0 {
        types.push(user_pb::AuthenticationMethodType::RecoveryCode as i32);
    }
    Ok(user_pb::ListAuthenticationMethodTypesResponse {
        details: Some(object_pb::ListDetails {
            total_result: types.len() as u64,
            processed_sequence: methods.processed_sequence,
            timestamp: Some(timestamp(methods.timestamp)),
        }),
        auth_method_types: types,
    })
}

/// ListAuthenticationFactors: the user's second factors (here at most its TOTP, as `otp`) of the
/// kinds and in the states asked for; as ZITADEL, every kind and only ready factors when the
/// request names none.
pub async fn list_authentication_factors(
    service: &Service,
    caller: &Caller,
    request: user_pb::ListAuthenticationFactorsRequest,
) -> Result<user_pb::ListAuthenticationFactorsResponse, Error> {
    let user_id = user_id(&request.user_id, "ListAuthenticationFactorsRequest")?;
    let methods = service
        .list_authentication_methods(caller, &user_id)
        .await?;
    let wants_otp = request.auth_factors.is_empty()
        || request
            .auth_factors
            .contains(&(user_pb::AuthFactors::Otp as i32));
    let states = if request.states.is_empty() {
        vec![user_pb::AuthFactorState::Ready as i32]
    } else {
        request.states
    };
    let otp = methods.totp.map(|state| match state {
        TotpState::Pending => user_pb::AuthFactorState::NotReady,
        TotpState::Ready => user_pb::AuthFactorState::Ready,
    });
    let result = otp
        .filter(|state| wants_otp && states.contains(&(*state as i32)))
        .map(|state| user_pb::AuthFactor {
            state: state as i32,
            r#type: Some(user_pb::auth_factor::Type::Otp(user_pb::AuthFactorOtp {})),
        })
        .into_iter()
        .collect();
    Ok(user_pb::ListAuthenticationFactorsResponse { result })
}

#[cfg(test)]
mod tests {
    //! No input reaches a panic: arbitrary bytes through the protobuf and JSON decoders of every
    //! request message, and arbitrary strings through validation and the code check.

    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::domain::totp;

    fn decodes_without_panic<T: Message + Default + serde::de::DeserializeOwned>(bytes: &[u8]) {
        let _ = T::decode(bytes);
        let _ = serde_json::from_slice::<T>(bytes);
    }

    fn every_request(bytes: &[u8]) {
        decodes_without_panic::<user_pb::AddHumanUserRequest>(bytes);
        decodes_without_panic::<user_pb::RegisterTotpRequest>(bytes);
        decodes_without_panic::<user_pb::VerifyTotpRegistrationRequest>(bytes);
        decodes_without_panic::<user_pb::RemoveTotpRequest>(bytes);
        decodes_without_panic::<user_pb::GetUserByIdRequest>(bytes);
        decodes_without_panic::<user_pb::DeleteUserRequest>(bytes);
        decodes_without_panic::<user_pb::LockUserRequest>(bytes);
        decodes_without_panic::<user_pb::ListAuthenticationMethodTypesRequest>(bytes);
        decodes_without_panic::<user_pb::ListAuthenticationFactorsRequest>(bytes);
        decodes_without_panic::<totp_pb::CheckTotpRequest>(bytes);
        decodes_without_panic::<totp_pb::ImportTotpRequest>(bytes);
        decodes_without_panic::<crate::proto::zitadel::user::v2beta::AddHumanUserRequest>(bytes);
    }

    /// JSON-shaped text built from the request's own keys, so the decoder goes past the first byte.
    fn json_like() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "userId",
            "user_id",
            "code",
            "organization",
            "orgId",
            "org_domain",
            "profile",
            "givenName",
            "gender",
            "email",
            "isVerified",
            "sendCode",
            "totpSecret",
            "username",
            "uri",
            "secret",
            "algorithm",
            "digits",
            "period",
            "pending",
        ]);
        let value = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "\\PC{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("{}".to_owned()),
            Just("[]".to_owned()),
            Just(r#"{"orgId":"x","orgDomain":"y"}"#.to_owned()),
            Just(r#""GENDER_FEMALE""#.to_owned()),
            Just("1e999".to_owned()),
        ];
        prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            every_request(&bytes);
        }

        #[test]
        fn json_shaped_bodies_never_panic_the_decoders(body in json_like()) {
            every_request(body.as_bytes());
        }

        #[test]
        fn arbitrary_codes_and_times_never_panic_the_check(code in "\\PC{0,12}", seconds in any::<i64>()) {
            let secret = totp::Secret::from_bytes(vec![7; 20]);
            let _ = totp::match_code(&secret, &code, seconds, totp::Parameters::ISSUED, None);
            let _ = TotpCode::parse(&code, "CheckTOTPRequest");
            let _ = UserId::parse(&code, "CheckTOTPRequest");
            let _ = totp::Secret::from_base32(&code);
        }

        #[test]
        fn arbitrary_uris_never_panic_the_import(
            query in "\\PC{0,40}",
            digits in any::<u32>(),
            period in any::<u32>(),
        ) {
            let _ = totp::parse_otpauth_uri(&query);
            let _ = totp::parse_otpauth_uri(&format!("otpauth://totp/a:b?{query}"));
            let _ = totp::parse_otpauth_uri(&format!(
                "otpauth://totp/a?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits={digits}&period={period}"
            ));
        }
    }
}
