//! Every RPC, declared once: its name, gRPC path, REST method and path, the permission it needs,
//! its request message and the function of [`super::messages`] that answers it. From this table
//! come the REST routes ([`rest_routes`]), the Connect dispatch ([`connect_dispatch`]), the
//! OpenAPI operations ([`ALL`], read by `openapi.rs`) and the metric labels (each RPC's `name`).
//! The gRPC service traits that tonic generates are implemented in `grpc.rs` with the same names.
//!
//! Adding an RPC: its proto and `messages.rs` function, one row here, one method in `grpc.rs`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::connect::{Codec, unary};
use super::rest::{FixedUserId, JsonBody, PathUserId, QueryFilters, RestError, caller, respond};
use super::{Api, messages, v2beta};
use crate::domain::Error;
use crate::domain::types::Caller;
use crate::proto::totpservice::v1 as totp_pb;
use crate::proto::zitadel::user::v2 as user_pb;
use crate::proto::zitadel::user::v2beta as beta;

/// One RPC as the table declares it.
#[derive(Clone, Debug)]
pub struct Rpc {
    /// The gRPC method name (metric label, log field, OpenAPI operation id).
    pub name: &'static str,
    /// `/<package>.<Service>/<Method>`: gRPC, gRPC-web and Connect.
    pub grpc_path: &'static str,
    pub rest_method: Method,
    /// The REST path, `{userId}` for the user's id.
    pub rest_path: &'static str,
    /// What it needs of its caller, as the README's API table says it.
    pub permission: &'static str,
    pub summary: &'static str,
    /// The OpenAPI schemas of the REST body (none: no body) and of the answer.
    pub body_schema: Option<&'static str>,
    /// REST reads the request from the query string (its schema's properties are the
    /// parameters), not from a body.
    pub rest_query: bool,
    pub response_schema: &'static str,
    /// Error statuses beyond those every RPC may answer, with their meaning.
    pub extra_statuses: &'static [(&'static str, &'static str)],
}

const TOO_LARGE: (&str, &str) = ("413", "Body over 64 KiB (code 3)");

/// Declares the table: the constants, [`ALL`], and the REST and Connect entries built from them.
macro_rules! rpcs {
    ($(
        $id:ident: $name:literal $grpc:literal, $verb:ident $path:literal, $permission:literal,
        $summary:literal, $request:ty => $run:path,
        body $body:tt $body_schema:expr, answers $response_schema:literal,
        errors [$($extra:expr),*];
    )*) => {
        $(
            pub const $id: Rpc = Rpc {
                name: $name,
                grpc_path: $grpc,
                rest_method: Method::$verb,
                rest_path: $path,
                permission: $permission,
                summary: $summary,
                body_schema: $body_schema,
                rest_query: rpcs!(@in_query $body),
                response_schema: $response_schema,
                extra_statuses: &[$($extra),*],
            };
        )*

        /// Every RPC, in the order of the table.
        pub const ALL: &[Rpc] = &[$($id),*];

        /// Runs the RPC at `path` (a Connect call) on `body`; `None` for a path with no RPC.
        pub(super) async fn connect_dispatch(
            api: &Api,
            caller: &Caller,
            path: &str,
            codec: Codec,
            body: &[u8],
        ) -> Option<(&'static str, Result<Vec<u8>, Error>)> {
            let service = &api.service;
            match path {
                $($grpc => Some(($name, unary(codec, body, |request: $request| $run(service, caller, request)).await)),)*
                _ => None,
            }
        }

        /// The REST routes of every RPC.
        pub fn rest_routes() -> Router<Api> {
            let mut by_path: BTreeMap<&'static str, MethodRouter<Api>> = BTreeMap::new();
            $(
                let handler = rpcs!(@handler $id, $request, $run, $body);
                let route = on(MethodFilter::$verb, handler);
                let merged = match by_path.remove($path) {
                    Some(methods) => methods.merge(route),
                    None => route,
                };
                by_path.insert($path, merged);
            )*
            routes_of(by_path)
        }
    };

    // A handler whose request is read from the JSON body, the path's user id set in it.
    (@handler $id:ident, $request:ty, $run:path, with_user) => {
        rpcs!(@handler_reading $id, $request, $run, JsonBody)
    };
    // A handler whose request is read from the query string, the path's user id set in it.
    (@handler $id:ident, $request:ty, $run:path, query) => {
        rpcs!(@handler_reading $id, $request, $run, QueryFilters)
    };
    // A handler whose request `$read` reads (the body or the query), with the path's user id.
    (@handler_reading $id:ident, $request:ty, $run:path, $read:ident) => {{
        async fn handler(
            State(api): State<Api>,
            user_id: Result<PathUserId, RestError>,
            headers: HeaderMap,
            read: Result<$read<$request>, RestError>,
        ) -> Result<Response, RestError> {
            let started = Instant::now();
            let result = async {
                let caller = caller(&api, &headers).await?;
                let $read(mut request) = read?;
                request.user_id = user_id?.0;
                Ok($run(&api.service, &caller, request).await?)
            }
            .await;
            respond($id.name, started, result)
        }
        handler
    }};
    // A handler without a body: the request is the path's user id.
    (@handler $id:ident, $request:ty, $run:path, none) => {{
        async fn handler(
            State(api): State<Api>,
            user_id: Result<PathUserId, RestError>,
            headers: HeaderMap,
        ) -> Result<Response, RestError> {
            let started = Instant::now();
            let result = async {
                let caller = caller(&api, &headers).await?;
                let mut request = <$request>::default();
                request.user_id = user_id?.0;
                Ok($run(&api.service, &caller, request).await?)
            }
            .await;
            respond($id.name, started, result)
        }
        handler
    }};
    // Whether REST reads the request from the query string (the table's `rest_query`).
    (@in_query query) => { true };
    (@in_query $other:tt) => { false };
    // A handler whose request is the JSON body as it is (no user in the path).
    (@handler $id:ident, $request:ty, $run:path, whole) => {{
        async fn handler(
            State(api): State<Api>,
            headers: HeaderMap,
            body: Result<JsonBody<$request>, RestError>,
        ) -> Result<Response, RestError> {
            let started = Instant::now();
            let result = async {
                let caller = caller(&api, &headers).await?;
                let JsonBody(request) = body?;
                Ok($run(&api.service, &caller, request).await?)
            }
            .await;
            respond($id.name, started, result)
        }
        handler
    }};
}

rpcs! {
    ADD_HUMAN_USER: "AddHumanUser" "/zitadel.user.v2.UserService/AddHumanUser",
        POST "/v2/users/human", "user.write",
        "Add a human user (optionally with an imported TOTP)",
        user_pb::AddHumanUserRequest => messages::add_human_user,
        body whole Some("AddHumanUserRequest"), answers "AddHumanUserResponse",
        errors [("409", "User already exists (code 6)"), TOO_LARGE];
    GET_USER_BY_ID: "GetUserByID" "/zitadel.user.v2.UserService/GetUserByID",
        GET "/v2/users/{userId}", "user.read ✓",
        "Get a user",
        user_pb::GetUserByIdRequest => messages::get_user_by_id,
        body none None, answers "GetUserByIDResponse",
        errors [];
    DELETE_USER: "DeleteUser" "/zitadel.user.v2.UserService/DeleteUser",
        DELETE "/v2/users/{userId}", "user.write",
        "Delete a user",
        user_pb::DeleteUserRequest => messages::delete_user,
        body none None, answers "DetailsResponse",
        errors [];
    LOCK_USER: "LockUser" "/zitadel.user.v2.UserService/LockUser",
        POST "/v2/users/{userId}/lock", "user.write",
        "Lock a user until unlocked",
        user_pb::LockUserRequest => messages::lock_user,
        body with_user Some("UserIdRequest"), answers "DetailsResponse",
        errors [];
    UNLOCK_USER: "UnlockUser" "/zitadel.user.v2.UserService/UnlockUser",
        POST "/v2/users/{userId}/unlock", "user.write",
        "Unlock a user",
        user_pb::UnlockUserRequest => messages::unlock_user,
        body with_user Some("UserIdRequest"), answers "DetailsResponse",
        errors [];
    LIST_AUTHENTICATION_METHOD_TYPES: "ListAuthenticationMethodTypes"
        "/zitadel.user.v2.UserService/ListAuthenticationMethodTypes",
        GET "/v2/users/{userId}/authentication_methods", "user.read ✓",
        "The user's ready authentication methods",
        user_pb::ListAuthenticationMethodTypesRequest => messages::list_authentication_method_types,
        body none None, answers "ListAuthenticationMethodTypesResponse",
        errors [];
    LIST_AUTHENTICATION_FACTORS: "ListAuthenticationFactors"
        "/zitadel.user.v2.UserService/ListAuthenticationFactors",
        POST "/v2/users/{userId}/authentication_factors/_search", "user.read ✓",
        "The user's second factors (its TOTP as otp), filtered by kind and state (default: ready)",
        user_pb::ListAuthenticationFactorsRequest => messages::list_authentication_factors,
        body query Some("ListAuthenticationFactorsFilters"),
        answers "ListAuthenticationFactorsResponse",
        errors [];
    REGISTER_TOTP: "RegisterTOTP" "/zitadel.user.v2.UserService/RegisterTOTP",
        POST "/v2/users/{userId}/totp", "user.credential.write ✓",
        "Register a TOTP (a pending one is replaced)",
        user_pb::RegisterTotpRequest => messages::register_totp,
        body with_user Some("UserIdRequest"), answers "RegisterTOTPResponse",
        errors [("409", "TOTP already set up (code 6)")];
    VERIFY_TOTP_REGISTRATION: "VerifyTOTPRegistration"
        "/zitadel.user.v2.UserService/VerifyTOTPRegistration",
        POST "/v2/users/{userId}/totp/verify", "user.credential.write ✓",
        "Verify the pending TOTP with its first code",
        user_pb::VerifyTotpRegistrationRequest => messages::verify_totp_registration,
        body with_user Some("CodeRequest"), answers "DetailsResponse",
        errors [TOO_LARGE];
    REMOVE_TOTP: "RemoveTOTP" "/zitadel.user.v2.UserService/RemoveTOTP",
        DELETE "/v2/users/{userId}/totp", "user.write ✓",
        "Remove the TOTP",
        user_pb::RemoveTotpRequest => messages::remove_totp,
        body none None, answers "DetailsResponse",
        errors [];
    CHECK_TOTP: "CheckTOTP" "/totpservice.v1.TOTPService/CheckTOTP",
        POST "/v2/users/{userId}/totp/check", "session.write ✓",
        "Check a code of the ready TOTP at login",
        totp_pb::CheckTotpRequest => messages::check_totp,
        body with_user Some("CodeRequest"), answers "DetailsResponse",
        errors [TOO_LARGE];
    IMPORT_TOTP: "ImportTOTP" "/totpservice.v1.TOTPService/ImportTOTP",
        POST "/v2/users/{userId}/totp/import", "user.credential.write ✓",
        "Import a TOTP credential with its algorithm, digits and period",
        totp_pb::ImportTotpRequest => messages::import_totp,
        body with_user Some("ImportTOTPRequest"), answers "DetailsResponse",
        errors [("409", "TOTP already set up (code 6)"), TOO_LARGE];
    GENERATE_RECOVERY_CODES: "GenerateRecoveryCodes"
        "/zitadel.user.v2.UserService/GenerateRecoveryCodes",
        POST "/v2/users/{userId}/recovery_codes", "user.credential.write ✓",
        "Generate single-use recovery codes (added to the unused ones, up to the maximum); shown once",
        user_pb::GenerateRecoveryCodesRequest => messages::generate_recovery_codes,
        body with_user Some("GenerateRecoveryCodesRequest"),
        answers "GenerateRecoveryCodesResponse",
        errors [TOO_LARGE];
    REMOVE_RECOVERY_CODES: "RemoveRecoveryCodes"
        "/zitadel.user.v2.UserService/RemoveRecoveryCodes",
        DELETE "/v2/users/{userId}/recovery_codes", "user.write ✓",
        "Remove every unused recovery code",
        user_pb::RemoveRecoveryCodesRequest => messages::remove_recovery_codes,
        body none None, answers "DetailsResponse",
        errors [];
    CHECK_RECOVERY_CODE: "CheckRecoveryCode" "/totpservice.v1.TOTPService/CheckRecoveryCode",
        POST "/v2/users/{userId}/recovery_codes/check", "session.write ✓",
        "Check and use up a recovery code at login (lockout as CheckTOTP); answers how many remain",
        totp_pb::CheckRecoveryCodeRequest => messages::check_recovery_code,
        body with_user Some("CodeRequest"), answers "CheckRecoveryCodeResponse",
        errors [TOO_LARGE];
    // zitadel.user.v2beta.UserService: the same RPCs under v2beta's package and paths, answered
    // by the v2 handlers through `v2beta.rs`.
    BETA_ADD_HUMAN_USER: "v2beta.AddHumanUser" "/zitadel.user.v2beta.UserService/AddHumanUser",
        POST "/v2beta/users/human", "user.write",
        "Add a human user (v2beta)",
        beta::AddHumanUserRequest => v2beta::add_human_user,
        body whole Some("AddHumanUserRequest"), answers "AddHumanUserResponse",
        errors [("409", "User already exists (code 6)"), TOO_LARGE];
    BETA_GET_USER_BY_ID: "v2beta.GetUserByID" "/zitadel.user.v2beta.UserService/GetUserByID",
        GET "/v2beta/users/{userId}", "user.read ✓",
        "Get a user (v2beta)",
        beta::GetUserByIdRequest => v2beta::get_user_by_id,
        body none None, answers "GetUserByIDResponse",
        errors [];
    BETA_DELETE_USER: "v2beta.DeleteUser" "/zitadel.user.v2beta.UserService/DeleteUser",
        DELETE "/v2beta/users/{userId}", "user.write",
        "Delete a user (v2beta)",
        beta::DeleteUserRequest => v2beta::delete_user,
        body none None, answers "DetailsResponse",
        errors [];
    BETA_LOCK_USER: "v2beta.LockUser" "/zitadel.user.v2beta.UserService/LockUser",
        POST "/v2beta/users/{userId}/lock", "user.write",
        "Lock a user until unlocked (v2beta)",
        beta::LockUserRequest => v2beta::lock_user,
        body with_user Some("UserIdRequest"), answers "DetailsResponse",
        errors [];
    BETA_UNLOCK_USER: "v2beta.UnlockUser" "/zitadel.user.v2beta.UserService/UnlockUser",
        POST "/v2beta/users/{userId}/unlock", "user.write",
        "Unlock a user (v2beta)",
        beta::UnlockUserRequest => v2beta::unlock_user,
        body with_user Some("UserIdRequest"), answers "DetailsResponse",
        errors [];
    BETA_LIST_AUTHENTICATION_METHOD_TYPES: "v2beta.ListAuthenticationMethodTypes"
        "/zitadel.user.v2beta.UserService/ListAuthenticationMethodTypes",
        GET "/v2beta/users/{userId}/authentication_methods", "user.read ✓",
        "The user's ready authentication methods (v2beta)",
        beta::ListAuthenticationMethodTypesRequest => v2beta::list_authentication_method_types,
        body none None, answers "ListAuthenticationMethodTypesResponse",
        errors [];
    BETA_LIST_AUTHENTICATION_FACTORS: "v2beta.ListAuthenticationFactors"
        "/zitadel.user.v2beta.UserService/ListAuthenticationFactors",
        POST "/v2beta/users/{userId}/authentication_factors/_search", "user.read ✓",
        "The user's second factors, filtered by kind and state (v2beta)",
        beta::ListAuthenticationFactorsRequest => v2beta::list_authentication_factors,
        body query Some("ListAuthenticationFactorsFilters"),
        answers "ListAuthenticationFactorsResponse",
        errors [];
    BETA_REGISTER_TOTP: "v2beta.RegisterTOTP" "/zitadel.user.v2beta.UserService/RegisterTOTP",
        POST "/v2beta/users/{userId}/totp", "user.credential.write ✓",
        "Start a TOTP registration (v2beta)",
        beta::RegisterTotpRequest => v2beta::register_totp,
        body with_user Some("UserIdRequest"), answers "RegisterTOTPResponse",
        errors [("409", "TOTP already set up (code 6)")];
    BETA_VERIFY_TOTP_REGISTRATION: "v2beta.VerifyTOTPRegistration"
        "/zitadel.user.v2beta.UserService/VerifyTOTPRegistration",
        POST "/v2beta/users/{userId}/totp/verify", "user.credential.write ✓",
        "Verify the pending TOTP with its first code (v2beta)",
        beta::VerifyTotpRegistrationRequest => v2beta::verify_totp_registration,
        body with_user Some("CodeRequest"), answers "DetailsResponse",
        errors [TOO_LARGE];
    BETA_REMOVE_TOTP: "v2beta.RemoveTOTP" "/zitadel.user.v2beta.UserService/RemoveTOTP",
        DELETE "/v2beta/users/{userId}/totp", "user.write ✓",
        "Remove the TOTP (v2beta)",
        beta::RemoveTotpRequest => v2beta::remove_totp,
        body none None, answers "DetailsResponse",
        errors [];
}

/// The router of the RPCs' REST paths (v2 and v2beta alike). A path with `{userId}` is also served with the id empty
/// (`/v2/users//totp`), so that an empty id is refused by validation (code 3) as on gRPC, not as
/// an unknown path; and `GET`/`DELETE /v2/users/human` address the user whose id is `human`
/// (only `POST` there is AddHumanUser).
fn routes_of(by_path: BTreeMap<&'static str, MethodRouter<Api>>) -> Router<Api> {
    let mut router = Router::new();
    let by_user = |rpc: &Rpc| by_path.get(rpc.rest_path).cloned();
    let (by_user, by_user_beta) = (by_user(&GET_USER_BY_ID), by_user(&BETA_GET_USER_BY_ID));
    for (path, methods) in by_path.clone() {
        let methods = match (path, &by_user, &by_user_beta) {
            ("/v2/users/human", Some(by_user), _) | ("/v2beta/users/human", _, Some(by_user)) => {
                methods.merge(by_user.clone().layer(axum::Extension(FixedUserId("human"))))
            }
            _ => methods,
        };
        let axum_path = path.replace("{userId}", "{user_id}");
        if axum_path.contains("{user_id}") {
            router = router.route(&axum_path.replace("{user_id}", ""), methods.clone());
        }
        router = router.route(&axum_path, methods);
    }
    router
}
