//! `zitadel.user.v2beta.UserService`, answered by the v2 handlers of [`super::messages`]. v2beta's
//! messages carry the same field numbers as v2's for every field this service reads or writes,
//! so a v2beta message becomes its v2 twin by re-encoding it (and the answer goes back the same
//! way); the one difference, AddHumanUserRequest's `organisation` of older releases, is mapped
//! first.

use prost::Message;

use super::messages;
use crate::domain::Service;
use crate::domain::error::Error;
use crate::domain::types::Caller;
use crate::proto::zitadel::object::v2beta as object_beta;
use crate::proto::zitadel::user::v2 as user_pb;
use crate::proto::zitadel::user::v2beta as beta;

/// `message` as the same-numbered message of the other version.
fn twin<To: Message + Default>(message: &impl Message) -> Result<To, Error> {
    To::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Error::Internal(format!("v2beta and v2 messages disagree: {e}")))
}

/// One v2beta RPC answered by its v2 handler.
macro_rules! through_v2 {
    ($($name:ident: $request:ident => $response:ident;)*) => {$(
        pub async fn $name(
            service: &Service,
            caller: &Caller,
            request: beta::$request,
        ) -> Result<beta::$response, Error> {
            let answer = messages::$name(service, caller, twin(&request)?).await?;
            twin(&answer)
        }
    )*};
}

through_v2! {
    get_user_by_id: GetUserByIdRequest => GetUserByIdResponse;
    delete_user: DeleteUserRequest => DeleteUserResponse;
    lock_user: LockUserRequest => LockUserResponse;
    unlock_user: UnlockUserRequest => UnlockUserResponse;
    list_authentication_method_types: ListAuthenticationMethodTypesRequest => ListAuthenticationMethodTypesResponse;
    list_authentication_factors: ListAuthenticationFactorsRequest => ListAuthenticationFactorsResponse;
    register_totp: RegisterTotpRequest => RegisterTotpResponse;
    verify_totp_registration: VerifyTotpRegistrationRequest => VerifyTotpRegistrationResponse;
    remove_totp: RemoveTotpRequest => RemoveTotpResponse;
}

/// AddHumanUser: `organization` wins, else the deprecated `organisation` names the organisation
/// (as ZITADEL reads them).
pub async fn add_human_user(
    service: &Service,
    caller: &Caller,
    mut request: beta::AddHumanUserRequest,
) -> Result<beta::AddHumanUserResponse, Error> {
    if let Some(organisation) = request.organisation.take()
        && request.organization.is_none()
    {
        request.organization = Some(twin::<object_beta::Organization>(&organisation)?);
    }
    let request: user_pb::AddHumanUserRequest = twin(&request)?;
    let answer = messages::add_human_user(service, caller, request).await?;
    twin(&answer)
}
