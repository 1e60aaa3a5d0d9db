//! How an error looks on each protocol, decided in one place: the HTTP status of each gRPC code
//! (SPEC.md §4), Connect's names for the codes and its one difference, and the
//! `zitadel.v1.ErrorDetail` every protocol carries (its id and message come from
//! [`Error::public`](crate::domain::Error::public)).

use axum::http::StatusCode;

use crate::domain::error::{Code, PublicError};
use crate::proto::zitadel::v1::ErrorDetail;

/// Type URL of the error detail (in `grpc-status-details-bin`, and `@type` in REST bodies).
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

/// The HTTP status of a code on REST (SPEC.md §4).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // The only code-12 answer on REST is a known path with the wrong method.
        Code::Unimplemented => StatusCode::METHOD_NOT_ALLOWED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Connect's name of a code and its HTTP status: REST's, except that Connect's protocol answers
/// `unimplemented` with 501 (its routing answers, no such procedure and a method other than
/// POST, set 404 and 405 themselves).
pub fn connect_code(code: Code) -> (&'static str, StatusCode) {
    let name = match code {
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::Unauthenticated => "unauthenticated",
    };
    let status = match code {
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        other => http_status(other),
    };
    (name, status)
}

/// The error detail of an error, where it carries one.
pub fn error_detail(public: &PublicError) -> Option<ErrorDetail> {
    public.detail.map(|(id, message)| ErrorDetail {
        id: id.to_owned(),
        message: message.to_owned(),
    })
}
