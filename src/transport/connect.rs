//! The Connect protocol's unary calls (as ZITADEL v2 serves them): `POST` on the gRPC paths with
//! an `application/json` or `application/proto` body holding the bare request message, answered
//! with the bare response message, or with Connect's error JSON
//! `{"code": "not_found", "message": …, "details": [{"type": …, "value": <base64 proto>}]}`.
//! Requests of other content types go on to gRPC and gRPC-web.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::observe::{self, Protocol};
use super::status::{connect_code, error_detail};
use super::{Api, MAX_BODY_BYTES, rpcs};
use crate::domain::error::{self, Error};

/// How a Connect message is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    Json,
    Proto,
}

/// Whether a request is a Connect unary call: a `POST` with a Connect content type on one of the
/// gRPC services' paths.
pub(super) fn is_connect(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::POST
        && Codec::of(&parts.headers).is_some()
        && SERVICE_PATHS
            .iter()
            .any(|service| parts.uri.path().starts_with(service))
}

/// The path prefixes of the gRPC services, where Connect calls arrive.
const SERVICE_PATHS: [&str; 3] = [
    "/zitadel.user.v2.UserService/",
    "/zitadel.user.v2beta.UserService/",
    "/totpservice.v1.TOTPService/",
];

impl Codec {
    fn of(headers: &http::HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        match content_type.split(';').next()?.trim() {
            "application/json" => Some(Codec::Json),
            "application/proto" => Some(Codec::Proto),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }

    fn decode<T: Message + Default + DeserializeOwned>(self, body: &[u8]) -> Result<T, Error> {
        let bad =
            || Error::Validation("the request body does not decode as the request message".into());
        match self {
            Codec::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
            Codec::Json => super::decode_json(body).map_err(|_| bad()),
            Codec::Proto => T::decode(body).map_err(|_| bad()),
        }
    }

    fn encode<T: Message + Serialize>(self, message: &T) -> Vec<u8> {
        match self {
            Codec::Json => serde_json::to_vec(message).expect("messages serialize"),
            Codec::Proto => message.encode_to_vec(),
        }
    }
}

/// An error as Connect's error JSON.
pub(super) fn error_response(error: &Error) -> Response {
    let public = error.public();
    let (code, status) = connect_code(public.code);
    let details: Vec<serde_json::Value> = error_detail(&public)
        .map(|detail| {
            serde_json::json!({
                "type": "zitadel.v1.ErrorDetail",
                "value": STANDARD_NO_PAD.encode(detail.encode_to_vec()),
                "debug": { "id": detail.id, "message": detail.message },
            })
        })
        .into_iter()
        .collect();
    let body = serde_json::json!({ "code": code, "message": public.message, "details": details });
    (status, axum::Json(body)).into_response()
}

/// Decodes the request, runs the RPC and encodes its answer.
pub(super) async fn unary<Req, Resp, Fut>(
    codec: Codec,
    body: &[u8],
    run: impl FnOnce(Req) -> Fut,
) -> Result<Vec<u8>, Error>
where
    Req: Message + Default + DeserializeOwned,
    Resp: Message + Serialize,
    Fut: Future<Output = Result<Resp, Error>>,
{
    let request = codec.decode(body)?;
    Ok(codec.encode(&run(request).await?))
}

/// Middleware on the gRPC paths: answers Connect requests, passes the rest on.
pub async fn intercept(State(api): State<Api>, request: Request, next: Next) -> Response {
    let Some(codec) = Codec::of(request.headers()) else {
        return next.run(request).await;
    };
    if request.method() != http::Method::POST {
        let mut response = error_response(&Error::Rejected(error::NO_SUCH_METHOD));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("").to_owned());
    let caller = match api.auth.authenticate(header.as_deref()).await {
        Ok(caller) => caller,
        Err(error) => return error_response(&error),
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return error_response(&Error::Rejected(error::BODY_TOO_LARGE)),
    };
    let Some((rpc_name, result)) = rpcs::connect_dispatch(&api, &caller, &path, codec, &body).await
    else {
        // A path with no procedure: HTTP 404 as Connect servers answer it (their router finds no
        // handler), with the `unimplemented` code Connect clients read from a 404.
        let mut response = error_response(&Error::Rejected(error::NO_SUCH_METHOD));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    observe::finish(rpc_name, Protocol::Connect, started, result.as_ref().err());
    match result {
        Ok(encoded) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(codec.content_type()),
            )],
            Bytes::from(encoded),
        )
            .into_response(),
        Err(error) => error_response(&error),
    }
}
