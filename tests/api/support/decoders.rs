//! What a failed call showed on each protocol's wire, read back into an [`ApiError`].

use base64::Engine;
use prost::Message;

use totp_service::proto::zitadel::v1::ErrorDetail;

use super::*;

/// The REST error body of a raw response, checked for shape.
pub fn rest_error_for_tests(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    rest_error(status, headers, bytes)
}

pub(super) fn rest_error(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|_| {
        panic!(
            "REST error body is JSON: {}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "REST error content type"
    );
    let details = body["details"]
        .as_array()
        .expect("details is an array")
        .iter()
        .map(|d| {
            assert_eq!(d["@type"], "type.googleapis.com/zitadel.v1.ErrorDetail");
            (
                d["id"].as_str().unwrap().to_owned(),
                d["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ApiError {
        code: body["code"].as_i64().expect("code is a number") as i32,
        message: body["message"].as_str().expect("message").to_owned(),
        details,
        http_status: Some(status),
        www_authenticate: headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

pub(super) fn http_method_for_connect() -> &'static str {
    "POST"
}

/// Connect's error JSON, with its code name checked against its HTTP status.
pub(super) fn connect_error(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    assert_eq!(
        headers["content-type"], "application/json",
        "Connect error content type"
    );
    let body: serde_json::Value = serde_json::from_slice(bytes).expect("Connect error JSON");
    let (code, expected_status) = match body["code"].as_str().expect("code is a name") {
        "invalid_argument" => (3, 400),
        "deadline_exceeded" => (4, 504),
        "not_found" => (5, 404),
        "already_exists" => (6, 409),
        "permission_denied" => (7, 403),
        "resource_exhausted" => (8, 429),
        "failed_precondition" => (9, 400),
        "unimplemented" => (12, 501),
        "internal" => (13, 500),
        "unavailable" => (14, 503),
        "unauthenticated" => (16, 401),
        other => panic!("unknown Connect code {other}"),
    };
    assert_eq!(
        status, expected_status,
        "HTTP status of Connect code {}",
        body["code"]
    );
    let details = body["details"]
        .as_array()
        .expect("details array")
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "zitadel.v1.ErrorDetail");
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(d["value"].as_str().unwrap().trim_end_matches('='))
                .expect("value is base64");
            let detail = ErrorDetail::decode(bytes.as_slice()).expect("ErrorDetail decodes");
            (detail.id, detail.message)
        })
        .collect();
    ApiError {
        code,
        message: body["message"].as_str().unwrap().to_owned(),
        details,
        http_status: None,
        www_authenticate: None,
    }
}

pub(super) fn decode_status_details(bytes: &[u8]) -> Vec<(String, String)> {
    totp_client::status::error_details(bytes)
        .unwrap_or_else(|e| panic!("grpc-status-details-bin holds ErrorDetails: {e}"))
}

pub(super) fn percent_decode(text: &str) -> String {
    totp_client::status::percent_decode(text)
}
