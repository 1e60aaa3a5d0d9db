//! The one error type of the domain. Every expected refusal is a [`Rejection`] with the gRPC code,
//! ZITADEL's error id and its English message (SPEC.md §3); the transports only translate it.

use super::totp::ImportProblem;

/// The gRPC status codes this service answers with. The transports map them to HTTP statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// An expected refusal: code, ZITADEL's error id and message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub id: &'static str,
    pub message: &'static str,
}

const fn rejection(code: Code, id: &'static str, message: &'static str) -> Rejection {
    Rejection { code, id, message }
}

pub const USER_NOT_FOUND: Rejection =
    rejection(Code::NotFound, "COMMAND-M9dsd", "User could not be found");
pub const NO_PERMISSION: Rejection = rejection(
    Code::PermissionDenied,
    "AUTH-AWfge",
    "No matching permissions found",
);
pub const TOTP_ALREADY_SET_UP: Rejection = rejection(
    Code::AlreadyExists,
    "COMMAND-do9se",
    "Multifactor OTP (OneTimePassword) is already set up",
);
pub const TOTP_NOT_REGISTERED: Rejection = rejection(
    Code::NotFound,
    "COMMAND-3Mif9s",
    "Multifactor OTP (OneTimePassword) doesn't exist",
);
pub const TOTP_ALREADY_VERIFIED: Rejection = rejection(
    Code::FailedPrecondition,
    "COMMAND-qx4ls",
    "Multifactor OTP (OneTimePassword) is already set up",
);
pub const USER_LOCKED: Rejection =
    rejection(Code::FailedPrecondition, "COMMAND-SF3fg", "User is locked");
pub const INVALID_CODE: Rejection = rejection(Code::InvalidArgument, "EVENT-8isk2", "Invalid code");
pub const CODE_ALREADY_USED: Rejection =
    rejection(Code::InvalidArgument, "TOTP-Auw0a", "Code was already used");
pub const TOTP_NOT_FOUND_ON_REMOVE: Rejection = rejection(
    Code::NotFound,
    "COMMAND-Hd9sd",
    "Multifactor OTP (OneTimePassword) doesn't exist",
);
pub const TOTP_NOT_READY: Rejection = rejection(
    Code::FailedPrecondition,
    "COMMAND-3Mif9s",
    "Multifactor OTP (OneTimePassword) isn't ready",
);
pub const USER_ALREADY_EXISTS: Rejection = rejection(
    Code::AlreadyExists,
    "COMMAND-7yiox1isql",
    "User already exists",
);
pub const ORG_DOMAIN_UNSUPPORTED: Rejection = rejection(
    Code::InvalidArgument,
    "USER-o1rg4",
    "Organization must be given by org_id, org_domain is not supported (use org_id)",
);
pub const ORG_MISSING: Rejection = rejection(
    Code::InvalidArgument,
    "USER-o2rg5",
    "Organization is missing: give organization.org_id or use a token with a resource owner",
);
pub const TOTP_SECRET_INVALID: Rejection = rejection(
    Code::InvalidArgument,
    "USER-t0tp1",
    "TOTP secret must be base32 of at least 16 bytes",
);
/// ImportTOTP: a request with both a URI and a secret, or neither.
pub const IMPORT_SOURCE: Rejection = rejection(
    Code::InvalidArgument,
    "TOTP-imp0x",
    "ImportTOTP takes either uri or secret (with algorithm, digits and period), not both",
);
/// ImportTOTP: the URI is not an `otpauth://totp/` one.
pub const IMPORT_URI: Rejection = rejection(
    Code::InvalidArgument,
    "TOTP-imp0u",
    "uri must be an otpauth://totp/ URI",
);
pub const IMPORT_SECRET: Rejection = rejection(
    Code::InvalidArgument,
    "TOTP-imp0s",
    "secret must be base32 of at least 16 bytes",
);
pub const IMPORT_ALGORITHM: Rejection = rejection(
    Code::InvalidArgument,
    "TOTP-imp0a",
    "algorithm must be SHA1, SHA256 or SHA512",
);
pub const IMPORT_DIGITS: Rejection =
    rejection(Code::InvalidArgument, "TOTP-imp0d", "digits must be 6 or 8");
pub const IMPORT_PERIOD: Rejection = rejection(
    Code::InvalidArgument,
    "TOTP-imp0p",
    "period must be between 15 and 120 seconds",
);
/// CheckRecoveryCode or RemoveRecoveryCodes for a user without recovery codes.
pub const NO_RECOVERY_CODES: Rejection = rejection(
    Code::NotFound,
    "TOTP-rc0n",
    "The user has no recovery codes",
);
/// GenerateRecoveryCodes beyond the configured maximum of codes not used yet (as ZITADEL, codes
/// are added to the remaining ones).
pub const TOO_MANY_RECOVERY_CODES: Rejection = rejection(
    Code::FailedPrecondition,
    "TOTP-rc0m",
    "The user would hold more recovery codes than allowed; remove the remaining ones first",
);
pub const SECRET_KEY_UNAVAILABLE: Rejection = rejection(
    Code::FailedPrecondition,
    "CRYPTO-k3y0f",
    "The TOTP secret is sealed under a key that is not configured",
);

pub const ALREADY_LOCKED: Rejection = rejection(
    Code::FailedPrecondition,
    "COMMAND-3NN8v",
    "User is already locked",
);
pub const NOT_LOCKED: Rejection = rejection(
    Code::FailedPrecondition,
    "COMMAND-4M0ds",
    "User is not locked",
);
/// A request that took longer than `TOTP_REQUEST_TIMEOUT`.
pub const TOO_SLOW: Rejection = rejection(
    Code::DeadlineExceeded,
    "COMMAND-t1me0",
    "The request took too long",
);
/// Internal to `rekey`: the secret is gone or already under the active key (never sent).
pub const NOTHING_TO_RESEAL: Rejection = rejection(
    Code::FailedPrecondition,
    "REKEY-n0th1",
    "Nothing to re-seal",
);
/// An unknown REST path.
pub const NOT_FOUND: Rejection = rejection(Code::NotFound, "HTTP-n0tf0", "Not Found");
/// A known REST path with the wrong method.
pub const METHOD_NOT_ALLOWED: Rejection =
    rejection(Code::Unimplemented, "HTTP-m3th0", "Method Not Allowed");

/// The database's queue is full: the client should come back a little later.
pub const OVERLOADED: Rejection = rejection(
    Code::ResourceExhausted,
    "STORE-full0",
    "The service is overloaded, try again later",
);

/// A Connect call to a path that names no procedure of ours.
pub const NO_SUCH_METHOD: Rejection =
    rejection(Code::Unimplemented, "CONNECT-n0rpc", "No such method");

/// An oversized Connect body: RESOURCE_EXHAUSTED, as gRPC answers it.
pub const BODY_TOO_LARGE: Rejection = rejection(
    Code::ResourceExhausted,
    "CONNECT-s1ze0",
    "The request exceeds 64 KiB",
);

/// Why a request carried no usable token (code 16, no ErrorDetail, as ZITADEL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header at all.
    Missing,
    /// A header that is not `Bearer <token>`.
    NotBearer,
    /// A bearer token that failed signature, issuer, audience or time checks.
    InvalidToken,
}

impl AuthFailure {
    /// The message as it appears in `grpc-message` and the REST body.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "auth header missing",
            AuthFailure::NotBearer => "invalid auth header (AUTH-toLo1)",
            AuthFailure::InvalidToken => "Errors.Token.Invalid (AUTH-7fs1e)",
        }
    }
}

/// Everything a command can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request broke a field rule (code 3, no ErrorDetail).
    #[error("{0}")]
    Validation(String),
    /// The token is missing or bad (code 16, no ErrorDetail).
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    /// An expected refusal, sent with one ErrorDetail.
    #[error("{} ({})", .0.message, .0.id)]
    Rejected(Rejection),
    /// The database cannot be reached (code 14). The text is for the log only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything unexpected (code 13). The text is for the log only, never for the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ImportProblem> for Error {
    fn from(problem: ImportProblem) -> Self {
        Error::Rejected(match problem {
            ImportProblem::Uri => IMPORT_URI,
            ImportProblem::Algorithm => IMPORT_ALGORITHM,
            ImportProblem::Digits => IMPORT_DIGITS,
            ImportProblem::Period => IMPORT_PERIOD,
            ImportProblem::Secret => IMPORT_SECRET,
        })
    }
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        Error::Rejected(rejection)
    }
}

/// What a client is told about an error: the same on every protocol (SPEC.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicError {
    pub code: Code,
    /// `"<message> (<id>)"`, or the bare message where there is no id.
    pub message: String,
    /// `(id, message)` of the single ErrorDetail, where the error carries one.
    pub detail: Option<(&'static str, &'static str)>,
}

impl Error {
    /// The gRPC status code the client sees, without building the rest of [`Error::public`].
    pub fn code(&self) -> Code {
        match self {
            Error::Validation(_) => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Rejected(rejection) => rejection.code,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The client's view of this error. Internal causes stay out of it.
    pub fn public(&self) -> PublicError {
        let (message, detail) = match self {
            Error::Validation(message) => (message.clone(), None),
            Error::Unauthenticated(failure) => (failure.message().to_owned(), None),
            Error::Rejected(rejection) => (
                format!("{} ({})", rejection.message, rejection.id),
                Some((rejection.id, rejection.message)),
            ),
            Error::Unavailable(_) => (
                "The service is unavailable, try again later (STORE-unav1)".to_owned(),
                Some(("STORE-unav1", "The service is unavailable, try again later")),
            ),
            Error::Internal(_) => (
                "An internal error occurred (INTERNAL-0x0)".to_owned(),
                Some(("INTERNAL-0x0", "An internal error occurred")),
            ),
        };
        PublicError {
            code: self.code(),
            message,
            detail,
        }
    }

    /// Whether the cause should be logged (the client never sees it).
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Internal(_))
    }
}

/// Shorthand used across the domain.
pub type Result<T, E = Error> = std::result::Result<T, E>;
