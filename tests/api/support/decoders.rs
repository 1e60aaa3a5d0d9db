//! A raw REST error answer read back into an [`ApiError`], for tests that send malformed input
//! outside the harness's client.

use super::*;

/// The REST error body of a raw response; a body that breaks the contract fails the test.
#[track_caller]
pub fn rest_error_for_tests(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    totp_client::calls::rest_refusal(status, headers, bytes)
        .unwrap_or_else(|breach| panic!("REST error breaks the contract: {breach:?}"))
}
