//! The cases of the core, abuse-resistance and reach issues, by subject. Each takes a backend and a
//! protocol and asserts what SPEC.md says: codes, ids, English messages, fields.

mod auth;
mod errors;
mod factors;
mod import;
mod life_cycle;
mod operations;
mod protocols;
mod recovery;
mod v2beta;

pub use auth::*;
pub use errors::*;
pub use factors::*;
pub use import::*;
pub use life_cycle::*;
pub use operations::*;
pub use protocols::*;
pub use recovery::*;
pub use v2beta::*;

use totp_service::proto::zitadel::object::v2 as object_pb;

use crate::support::*;

pub(crate) async fn harness(backend: Backend, protocol: Protocol) -> Harness {
    Harness::start(Options::new(backend, protocol)).await
}

pub(crate) const NOT_FOUND_USER: (i32, &str, &str) =
    (5, "COMMAND-M9dsd", "User could not be found");
pub(crate) const NO_PERMISSION: (i32, &str, &str) =
    (7, "AUTH-AWfge", "No matching permissions found");
pub(crate) const INVALID_CODE: (i32, &str, &str) = (3, "EVENT-8isk2", "Invalid code");
pub(crate) const ALREADY_USED: (i32, &str, &str) = (3, "TOTP-Auw0a", "Code was already used");
pub(crate) const USER_LOCKED: (i32, &str, &str) = (9, "COMMAND-SF3fg", "User is locked");

#[track_caller]
pub(crate) fn assert_is<T: std::fmt::Debug>(
    result: Result<T, ApiError>,
    (code, id, message): (i32, &str, &str),
) {
    match result {
        Ok(value) => panic!("expected {id}, got success {value:?}"),
        Err(error) => error.assert_rejected(code, id, message),
    }
}

pub(crate) fn details(d: &Option<object_pb::Details>) -> &object_pb::Details {
    d.as_ref().expect("details are set")
}
