//! The gRPC face (also served as gRPC-web by `tonic-web`): each method authenticates, then calls
//! the shared RPC function in [`super::rpc`]. Errors become a `tonic::Status` in one place.

use prost::Message;
use tonic::{Request, Response, Status};

use std::time::Instant;

use super::Api;
use super::observe::{self, Protocol};
use super::status::{ERROR_DETAIL_TYPE_URL, error_detail};
use super::{messages, rpcs, v2beta};
use crate::domain::Error;
use crate::domain::types::Caller;
use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::totpservice::v1::{self as totp_pb, totp_service_server::TotpService};
use crate::proto::zitadel::user::v2::{self as user_pb, user_service_server::UserService};
use crate::proto::zitadel::user::v2beta::{
    self as beta, user_service_server::UserService as BetaUserService,
};

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let public = error.public();
        let code = tonic::Code::from_i32(public.code as i32);
        let details = error_detail(&public)
            .map(|detail| pbjson_types::Any {
                type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
                value: detail.encode_to_vec().into(),
            })
            .into_iter()
            .collect();
        let status = RpcStatus {
            code: public.code as i32,
            message: public.message.clone(),
            details,
        };
        Status::with_details(code, public.message, status.encode_to_vec().into())
    }
}

impl Api {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or(""));
        self.auth.authenticate(header).await
    }
}

/// Authenticates, runs the shared RPC function, records the outcome and wraps the answer.
macro_rules! unary {
    ($self:ident, $request:ident, $rpc:expr, $run:path) => {{
        let started = Instant::now();
        let protocol = $request
            .extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or(Protocol::Grpc);
        let result = async {
            let caller = $self.caller(&$request).await?;
            $run(&$self.service, &caller, $request.into_inner()).await
        }
        .await;
        observe::finish($rpc.name, protocol, started, result.as_ref().err());
        Ok(Response::new(result?))
    }};
}

#[tonic::async_trait]
impl UserService for Api {
    async fn add_human_user(
        &self,
        request: Request<user_pb::AddHumanUserRequest>,
    ) -> Result<Response<user_pb::AddHumanUserResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::ADD_HUMAN_USER,
            messages::add_human_user
        )
    }

    async fn get_user_by_id(
        &self,
        request: Request<user_pb::GetUserByIdRequest>,
    ) -> Result<Response<user_pb::GetUserByIdResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::GET_USER_BY_ID,
            messages::get_user_by_id
        )
    }

    async fn delete_user(
        &self,
        request: Request<user_pb::DeleteUserRequest>,
    ) -> Result<Response<user_pb::DeleteUserResponse>, Status> {
        unary!(self, request, rpcs::DELETE_USER, messages::delete_user)
    }

    async fn lock_user(
        &self,
        request: Request<user_pb::LockUserRequest>,
    ) -> Result<Response<user_pb::LockUserResponse>, Status> {
        unary!(self, request, rpcs::LOCK_USER, messages::lock_user)
    }

    async fn unlock_user(
        &self,
        request: Request<user_pb::UnlockUserRequest>,
    ) -> Result<Response<user_pb::UnlockUserResponse>, Status> {
        unary!(self, request, rpcs::UNLOCK_USER, messages::unlock_user)
    }

    async fn list_authentication_method_types(
        &self,
        request: Request<user_pb::ListAuthenticationMethodTypesRequest>,
    ) -> Result<Response<user_pb::ListAuthenticationMethodTypesResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::LIST_AUTHENTICATION_METHOD_TYPES,
            messages::list_authentication_method_types
        )
    }

    async fn list_authentication_factors(
        &self,
        request: Request<user_pb::ListAuthenticationFactorsRequest>,
    ) -> Result<Response<user_pb::ListAuthenticationFactorsResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::LIST_AUTHENTICATION_FACTORS,
            messages::list_authentication_factors
        )
    }

    async fn register_totp(
        &self,
        request: Request<user_pb::RegisterTotpRequest>,
    ) -> Result<Response<user_pb::RegisterTotpResponse>, Status> {
        unary!(self, request, rpcs::REGISTER_TOTP, messages::register_totp)
    }

    async fn verify_totp_registration(
        &self,
        request: Request<user_pb::VerifyTotpRegistrationRequest>,
    ) -> Result<Response<user_pb::VerifyTotpRegistrationResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::VERIFY_TOTP_REGISTRATION,
            messages::verify_totp_registration
        )
    }

    async fn remove_totp(
        &self,
        request: Request<user_pb::RemoveTotpRequest>,
    ) -> Result<Response<user_pb::RemoveTotpResponse>, Status> {
        unary!(self, request, rpcs::REMOVE_TOTP, messages::remove_totp)
    }

    async fn generate_recovery_codes(
        &self,
        request: Request<user_pb::GenerateRecoveryCodesRequest>,
    ) -> Result<Response<user_pb::GenerateRecoveryCodesResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::GENERATE_RECOVERY_CODES,
            messages::generate_recovery_codes
        )
    }

    async fn remove_recovery_codes(
        &self,
        request: Request<user_pb::RemoveRecoveryCodesRequest>,
    ) -> Result<Response<user_pb::RemoveRecoveryCodesResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::REMOVE_RECOVERY_CODES,
            messages::remove_recovery_codes
        )
    }
}

#[tonic::async_trait]
impl TotpService for Api {
    async fn check_totp(
        &self,
        request: Request<totp_pb::CheckTotpRequest>,
    ) -> Result<Response<totp_pb::CheckTotpResponse>, Status> {
        unary!(self, request, rpcs::CHECK_TOTP, messages::check_totp)
    }

    async fn import_totp(
        &self,
        request: Request<totp_pb::ImportTotpRequest>,
    ) -> Result<Response<totp_pb::ImportTotpResponse>, Status> {
        unary!(self, request, rpcs::IMPORT_TOTP, messages::import_totp)
    }

    async fn check_recovery_code(
        &self,
        request: Request<totp_pb::CheckRecoveryCodeRequest>,
    ) -> Result<Response<totp_pb::CheckRecoveryCodeResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::CHECK_RECOVERY_CODE,
            messages::check_recovery_code
        )
    }
}

/// v2beta: the same RPCs, answered by the v2 handlers through [`v2beta`].
#[tonic::async_trait]
impl BetaUserService for Api {
    async fn add_human_user(
        &self,
        request: Request<beta::AddHumanUserRequest>,
    ) -> Result<Response<beta::AddHumanUserResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::BETA_ADD_HUMAN_USER,
            v2beta::add_human_user
        )
    }

    async fn get_user_by_id(
        &self,
        request: Request<beta::GetUserByIdRequest>,
    ) -> Result<Response<beta::GetUserByIdResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::BETA_GET_USER_BY_ID,
            v2beta::get_user_by_id
        )
    }

    async fn delete_user(
        &self,
        request: Request<beta::DeleteUserRequest>,
    ) -> Result<Response<beta::DeleteUserResponse>, Status> {
        unary!(self, request, rpcs::BETA_DELETE_USER, v2beta::delete_user)
    }

    async fn lock_user(
        &self,
        request: Request<beta::LockUserRequest>,
    ) -> Result<Response<beta::LockUserResponse>, Status> {
        unary!(self, request, rpcs::BETA_LOCK_USER, v2beta::lock_user)
    }

    async fn unlock_user(
        &self,
        request: Request<beta::UnlockUserRequest>,
    ) -> Result<Response<beta::UnlockUserResponse>, Status> {
        unary!(self, request, rpcs::BETA_UNLOCK_USER, v2beta::unlock_user)
    }

    async fn list_authentication_method_types(
        &self,
        request: Request<beta::ListAuthenticationMethodTypesRequest>,
    ) -> Result<Response<beta::ListAuthenticationMethodTypesResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::BETA_LIST_AUTHENTICATION_METHOD_TYPES,
            v2beta::list_authentication_method_types
        )
    }

    async fn list_authentication_factors(
        &self,
        request: Request<beta::ListAuthenticationFactorsRequest>,
    ) -> Result<Response<beta::ListAuthenticationFactorsResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::BETA_LIST_AUTHENTICATION_FACTORS,
            v2beta::list_authentication_factors
        )
    }

    async fn register_totp(
        &self,
        request: Request<beta::RegisterTotpRequest>,
    ) -> Result<Response<beta::RegisterTotpResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::BETA_REGISTER_TOTP,
            v2beta::register_totp
        )
    }

    async fn verify_totp_registration(
        &self,
        request: Request<beta::VerifyTotpRegistrationRequest>,
    ) -> Result<Response<beta::VerifyTotpRegistrationResponse>, Status> {
        unary!(
            self,
            request,
            rpcs::BETA_VERIFY_TOTP_REGISTRATION,
            v2beta::verify_totp_registration
        )
    }

    async fn remove_totp(
        &self,
        request: Request<beta::RemoveTotpRequest>,
    ) -> Result<Response<beta::RemoveTotpResponse>, Status> {
        unary!(self, request, rpcs::BETA_REMOVE_TOTP, v2beta::remove_totp)
    }
}
