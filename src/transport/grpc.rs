//! The gRPC face (also served as gRPC-web by `tonic-web`): each method authenticates, then calls
//! the shared RPC function in [`super::rpc`]. Errors become a `tonic::Status` in one place.

use prost::Message;
use tonic::{Request, Response, Status};

use std::time::Instant;

use super::Api;
use super::observe::{self, Protocol};
use super::rpc;
use crate::domain::Error;
use crate::domain::types::Caller;
use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::totpservice::v1::{self as totp_pb, totp_service_server::TotpService};
use crate::proto::zitadel::user::v2::{self as user_pb, user_service_server::UserService};
use crate::proto::zitadel::v1::ErrorDetail;

/// Type URL of the error detail in `grpc-status-details-bin`.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        super::log_server_fault(&error);
        let public = error.public();
        let code = tonic::Code::from_i32(public.code as i32);
        let details = public
            .detail
            .map(|(id, message)| pbjson_types::Any {
                type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
                value: ErrorDetail {
                    id: id.to_owned(),
                    message: message.to_owned(),
                }
                .encode_to_vec()
                .into(),
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
    ($self:ident, $request:ident, $name:literal, $rpc:path) => {{
        let started = Instant::now();
        let protocol = $request
            .extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or(Protocol::Grpc);
        let result = async {
            let caller = $self.caller(&$request).await?;
            $rpc(&$self.service, &caller, $request.into_inner()).await
        }
        .await;
        observe::finish($name, protocol, started, result.as_ref().err());
        Ok(Response::new(result?))
    }};
}

#[tonic::async_trait]
impl UserService for Api {
    async fn add_human_user(
        &self,
        request: Request<user_pb::AddHumanUserRequest>,
    ) -> Result<Response<user_pb::AddHumanUserResponse>, Status> {
        unary!(self, request, "AddHumanUser", rpc::add_human_user)
    }

    async fn get_user_by_id(
        &self,
        request: Request<user_pb::GetUserByIdRequest>,
    ) -> Result<Response<user_pb::GetUserByIdResponse>, Status> {
        unary!(self, request, "GetUserByID", rpc::get_user_by_id)
    }

    async fn delete_user(
        &self,
        request: Request<user_pb::DeleteUserRequest>,
    ) -> Result<Response<user_pb::DeleteUserResponse>, Status> {
        unary!(self, request, "DeleteUser", rpc::delete_user)
    }

    async fn lock_user(
        &self,
        request: Request<user_pb::LockUserRequest>,
    ) -> Result<Response<user_pb::LockUserResponse>, Status> {
        unary!(self, request, "LockUser", rpc::lock_user)
    }

    async fn unlock_user(
        &self,
        request: Request<user_pb::UnlockUserRequest>,
    ) -> Result<Response<user_pb::UnlockUserResponse>, Status> {
        unary!(self, request, "UnlockUser", rpc::unlock_user)
    }

    async fn list_authentication_method_types(
        &self,
        request: Request<user_pb::ListAuthenticationMethodTypesRequest>,
    ) -> Result<Response<user_pb::ListAuthenticationMethodTypesResponse>, Status> {
        unary!(
            self,
            request,
            "ListAuthenticationMethodTypes",
            rpc::list_authentication_method_types
        )
    }

    async fn register_totp(
        &self,
        request: Request<user_pb::RegisterTotpRequest>,
    ) -> Result<Response<user_pb::RegisterTotpResponse>, Status> {
        unary!(self, request, "RegisterTOTP", rpc::register_totp)
    }

    async fn verify_totp_registration(
        &self,
        request: Request<user_pb::VerifyTotpRegistrationRequest>,
    ) -> Result<Response<user_pb::VerifyTotpRegistrationResponse>, Status> {
        unary!(
            self,
            request,
            "VerifyTOTPRegistration",
            rpc::verify_totp_registration
        )
    }

    async fn remove_totp(
        &self,
        request: Request<user_pb::RemoveTotpRequest>,
    ) -> Result<Response<user_pb::RemoveTotpResponse>, Status> {
        unary!(self, request, "RemoveTOTP", rpc::remove_totp)
    }
}

#[tonic::async_trait]
impl TotpService for Api {
    async fn check_totp(
        &self,
        request: Request<totp_pb::CheckTotpRequest>,
    ) -> Result<Response<totp_pb::CheckTotpResponse>, Status> {
        unary!(self, request, "CheckTOTP", rpc::check_totp)
    }
}
