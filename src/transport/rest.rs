//! The REST face (SPEC.md §2): ZITADEL's v2 paths with proto3-JSON bodies. Each handler
//! authenticates, reads the body into the request message (the path's `user_id` wins), and calls
//! the shared RPC function in [`super::rpc`]. Errors become the REST error body in one place.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::observe::{self, Protocol};
use super::status::{ERROR_DETAIL_TYPE_URL, http_status};
use super::{Api, MAX_BODY_BYTES};
use crate::domain::error::{self, Error};
use crate::domain::types::Caller;

/// A domain error as the REST error body `{code, message, details}`.
pub struct RestError {
    error: Error,
    /// Overrides the status of the code (413 and 408 for a body too large or too slow).
    status: Option<StatusCode>,
}

impl From<Error> for RestError {
    fn from(error: Error) -> Self {
        RestError {
            error,
            status: None,
        }
    }
}

impl RestError {
    pub(super) fn with_status(error: Error, status: StatusCode) -> Self {
        RestError {
            error,
            status: Some(status),
        }
    }
}

/// The REST error body (SPEC.md §4): `{code, message, details}`, written straight from typed
/// fields (a wrong code answers with it, so it is on a hot path).
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    code: i32,
    message: &'a str,
    details: &'a [ErrorDetailBody],
}

/// One entry of `details`: the `zitadel.v1.ErrorDetail` in its JSON form.
#[derive(serde::Serialize)]
struct ErrorDetailBody {
    #[serde(rename = "@type")]
    type_url: &'static str,
    id: &'static str,
    message: &'static str,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let public = self.error.public();
        let detail = public.detail.map(|(id, message)| ErrorDetailBody {
            type_url: ERROR_DETAIL_TYPE_URL,
            id,
            message,
        });
        let body = ErrorBody {
            code: public.code as i32,
            message: &public.message,
            details: detail.as_slice(),
        };
        let status = self.status.unwrap_or_else(|| http_status(public.code));
        let mut response = (status, Json(body)).into_response();
        if let Error::Unauthenticated(failure) = &self.error {
            let challenge = match failure {
                crate::domain::error::AuthFailure::InvalidToken => "Bearer error=\"invalid_token\"",
                _ => "Bearer",
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A request body read as the JSON form of a request message: empty means `{}`; a wrong content
/// type, bad JSON or more than [`MAX_BODY_BYTES`] is refused with code 3.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                RestError::with_status(
                    Error::Validation(format!("request body exceeds {MAX_BODY_BYTES} bytes")),
                    StatusCode::PAYLOAD_TOO_LARGE,
                )
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        let is_json = content_type.as_deref().is_none_or(|ct| {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        });
        if !is_json {
            return Err(
                Error::Validation("content type must be application/json".to_owned()).into(),
            );
        }
        // The parser's own message may quote the input (a secret or a code): say where, not what.
        super::decode_json(&bytes).map(JsonBody).map_err(|err| {
            Error::Validation(format!(
                "invalid JSON body for this request at line {} column {}",
                err.line(),
                err.column()
            ))
            .into()
        })
    }
}

/// A request message read from the query string, as grpc-gateway reads the filters of ZITADEL's
/// `…/_search` routes that take no body: each key is a field (`authFactors` or `auth_factors`),
/// repeated for each value (`?states=AUTH_FACTOR_STATE_READY&states=…`). Every field read this way
/// is a repeated one, so each key's values become a list.
pub(super) struct QueryFilters<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryFilters<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, RestError> {
        let Some(query) = parts.uri.query() else {
            return Ok(QueryFilters(T::default()));
        };
        let mut fields = serde_json::Map::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let values = fields
                .entry(key.into_owned())
                .or_insert_with(|| serde_json::Value::Array(vec![]));
            // An enum may be named or numbered (`states=2`), as grpc-gateway reads it.
            let value = match value.parse::<i64>() {
                Ok(number) => serde_json::Value::from(number),
                Err(_) => serde_json::Value::String(value.into_owned()),
            };
            if let serde_json::Value::Array(values) = values {
                values.push(value);
            }
        }
        serde_json::from_value(serde_json::Value::Object(fields))
            .map(QueryFilters)
            .map_err(|_| {
                Error::Validation("invalid query parameters for this request".to_owned()).into()
            })
    }
}

/// The caller of a request's `Authorization` header.
pub(super) async fn caller(api: &Api, headers: &HeaderMap) -> Result<Caller, RestError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or(""));
    Ok(api.auth.authenticate(header).await?)
}

/// The `{user_id}` of the path, percent-decoded; empty for the `/v2/users//…` form of the same
/// route, so that an empty id is refused by validation (code 3) as on gRPC, not as an unknown
/// path. A path whose id is not UTF-8 once decoded is code 3 with the REST error body.
pub(super) struct PathUserId(pub String);

/// A route whose path names its user without a `{user_id}` segment: `/v2/users/human` is
/// AddHumanUser for `POST`, and the user whose id is `human` for `GET` and `DELETE`.
#[derive(Clone, Copy)]
pub(super) struct FixedUserId(pub &'static str);

impl<S: Send + Sync> FromRequestParts<S> for PathUserId {
    type Rejection = RestError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, RestError> {
        if let Some(FixedUserId(user_id)) = parts.extensions.get::<FixedUserId>() {
            return Ok(PathUserId((*user_id).to_owned()));
        }
        match Option::<Path<String>>::from_request_parts(parts, state).await {
            Ok(param) => Ok(PathUserId(
                param.map(|Path(user_id)| user_id).unwrap_or_default(),
            )),
            Err(_) => Err(Error::Validation(
                "invalid path: the user id is not valid UTF-8 once percent-decoded".to_owned(),
            )
            .into()),
        }
    }
}

/// Records the outcome of an RPC and turns it into the JSON response or the error body.
pub(super) fn respond<T: serde::Serialize>(
    rpc: &'static str,
    started: Instant,
    result: Result<T, RestError>,
) -> Result<Response, RestError> {
    observe::finish(
        rpc,
        Protocol::Rest,
        started,
        result.as_ref().err().map(|e| &e.error),
    );
    Ok(Json(result?).into_response())
}

/// Unknown paths: 404 with the error body (code 5).
pub async fn not_found() -> RestError {
    Error::Rejected(error::NOT_FOUND).into()
}

/// A known path with the wrong method: 405 with the error body (code 12).
pub async fn method_not_allowed() -> RestError {
    Error::Rejected(error::METHOD_NOT_ALLOWED).into()
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(api): State<Api>) -> Response {
    let connections = api.service.connection_stats();
    metrics::gauge!(observe::DB_CONNECTIONS, "state" => "in_use")
        .set(f64::from(connections.in_use));
    metrics::gauge!(observe::DB_CONNECTIONS, "state" => "idle").set(f64::from(connections.idle));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        observe::render(),
    )
        .into_response()
}

/// `GET /readyz`: the database answers.
pub async fn readyz(State(api): State<Api>) -> Response {
    if api.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match api.service.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(err) => {
            observe::log_server_fault(&err);
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}
