//! The error of a gRPC or gRPC-web answer: the `zitadel.v1.ErrorDetail`s in
//! `grpc-status-details-bin`, and the percent-encoded `grpc-message`.

use prost::Message;
use totp_service::proto::google::rpc::Status as RpcStatus;
use totp_service::proto::zitadel::v1::ErrorDetail;

/// Type URL of the error detail.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

/// `(id, message)` of every ErrorDetail in the bytes of `grpc-status-details-bin` (a
/// `google.rpc.Status`); `Err` when they are not that, or hold another detail type.
pub fn error_details(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    if bytes.is_empty() {
        return Ok(vec![]);
    }
    let status = RpcStatus::decode(bytes).map_err(|e| format!("not a google.rpc.Status: {e}"))?;
    status
        .details
        .iter()
        .map(|any| {
            if any.type_url != ERROR_DETAIL_TYPE_URL {
                return Err(format!("a detail of type {}", any.type_url));
            }
            let detail = ErrorDetail::decode(any.value.as_ref())
                .map_err(|e| format!("not an ErrorDetail: {e}"))?;
            Ok((detail.id, detail.message))
        })
        .collect()
}

/// A `grpc-message` decoded from its percent-encoding (invalid escapes are kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
