//! One client for every RPC of the service on each of its four protocols: REST (HTTP/1.1 JSON),
//! gRPC (HTTP/2), gRPC-web (binary, HTTP/1.1) and Connect (unary JSON). Each RPC is a request
//! type implementing [`Rpc`], which says where it lives on each protocol; [`Client::call`] sends
//! it and reads the answer back into the response message or a [`CallError`].
//!
//! The client checks what the wire contract says of every answer (content types, the shape of
//! REST's and Connect's error bodies, Connect's code names against their HTTP statuses,
//! gRPC-web's HTTP 200) and reports a breach as [`CallError::Contract`]: the integration tests
//! fail on it, the load generator counts it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;
use totp_service::proto::zitadel::user::v2beta as beta;
use totp_service::proto::zitadel::v1::ErrorDetail;

use crate::{grpc_web, status};

/// The four protocols the service speaks on its one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
    /// Connect unary calls with JSON bodies on the gRPC paths.
    Connect,
}

/// A request message of one RPC, and where that RPC lives on each protocol.
pub trait Rpc: Message + Serialize + Send + Sync + 'static {
    type Response: Message + Default + DeserializeOwned + Send + Sync + 'static;
    /// `<package>.<Service>/<Method>`: the path of gRPC, gRPC-web and Connect.
    const METHOD: &'static str;
    /// REST's HTTP method.
    const REST_METHOD: http::Method;
    /// Whether REST sends the request as a JSON body (else everything is in the path).
    const REST_BODY: bool;
    /// REST's path for this request.
    fn rest_path(&self) -> String;
}

/// Declares the RPCs: `Request => Response, "<gRPC method>", VERB path body?;` where the path is
/// a literal, `user "<suffix>"` (`/v2/users/<the request's user id><suffix>`) or `beta_user
/// "<suffix>"` (the same under `/v2beta/`).
macro_rules! rpcs {
    ($($request:ty => $response:ty, $method:literal, $verb:ident $($path:literal)? $(user $suffix:literal)? $(beta_user $beta_suffix:literal)?, $body:literal;)*) => {$(
        impl Rpc for $request {
            type Response = $response;
            const METHOD: &'static str = $method;
            const REST_METHOD: http::Method = http::Method::$verb;
            const REST_BODY: bool = $body;
            fn rest_path(&self) -> String {
                $(let _ = self; return $path.to_owned();)?
                $(return user_path(&self.user_id, $suffix);)?
                $(return user_path(&self.user_id, $beta_suffix).replacen("/v2/", "/v2beta/", 1);)?
            }
        }
    )*};
}

rpcs! {
    user_pb::AddHumanUserRequest => user_pb::AddHumanUserResponse,
        "zitadel.user.v2.UserService/AddHumanUser", POST "/v2/users/human", true;
    user_pb::GetUserByIdRequest => user_pb::GetUserByIdResponse,
        "zitadel.user.v2.UserService/GetUserByID", GET user "", false;
    user_pb::DeleteUserRequest => user_pb::DeleteUserResponse,
        "zitadel.user.v2.UserService/DeleteUser", DELETE user "", false;
    user_pb::LockUserRequest => user_pb::LockUserResponse,
        "zitadel.user.v2.UserService/LockUser", POST user "/lock", true;
    user_pb::UnlockUserRequest => user_pb::UnlockUserResponse,
        "zitadel.user.v2.UserService/UnlockUser", POST user "/unlock", true;
    user_pb::ListAuthenticationMethodTypesRequest => user_pb::ListAuthenticationMethodTypesResponse,
        "zitadel.user.v2.UserService/ListAuthenticationMethodTypes",
        GET user "/authentication_methods", false;
    user_pb::RegisterTotpRequest => user_pb::RegisterTotpResponse,
        "zitadel.user.v2.UserService/RegisterTOTP", POST user "/totp", true;
    user_pb::VerifyTotpRegistrationRequest => user_pb::VerifyTotpRegistrationResponse,
        "zitadel.user.v2.UserService/VerifyTOTPRegistration", POST user "/totp/verify", true;
    user_pb::RemoveTotpRequest => user_pb::RemoveTotpResponse,
        "zitadel.user.v2.UserService/RemoveTOTP", DELETE user "/totp", false;
    totp_pb::CheckTotpRequest => totp_pb::CheckTotpResponse,
        "totpservice.v1.TOTPService/CheckTOTP", POST user "/totp/check", true;
    totp_pb::ImportTotpRequest => totp_pb::ImportTotpResponse,
        "totpservice.v1.TOTPService/ImportTOTP", POST user "/totp/import", true;
    user_pb::GenerateRecoveryCodesRequest => user_pb::GenerateRecoveryCodesResponse,
        "zitadel.user.v2.UserService/GenerateRecoveryCodes", POST user "/recovery_codes", true;
    user_pb::RemoveRecoveryCodesRequest => user_pb::RemoveRecoveryCodesResponse,
        "zitadel.user.v2.UserService/RemoveRecoveryCodes", DELETE user "/recovery_codes", false;
    totp_pb::CheckRecoveryCodeRequest => totp_pb::CheckRecoveryCodeResponse,
        "totpservice.v1.TOTPService/CheckRecoveryCode", POST user "/recovery_codes/check", true;
    beta::AddHumanUserRequest => beta::AddHumanUserResponse,
        "zitadel.user.v2beta.UserService/AddHumanUser", POST "/v2beta/users/human", true;
    beta::GetUserByIdRequest => beta::GetUserByIdResponse,
        "zitadel.user.v2beta.UserService/GetUserByID", GET beta_user "", false;
    beta::DeleteUserRequest => beta::DeleteUserResponse,
        "zitadel.user.v2beta.UserService/DeleteUser", DELETE beta_user "", false;
    beta::LockUserRequest => beta::LockUserResponse,
        "zitadel.user.v2beta.UserService/LockUser", POST beta_user "/lock", true;
    beta::UnlockUserRequest => beta::UnlockUserResponse,
        "zitadel.user.v2beta.UserService/UnlockUser", POST beta_user "/unlock", true;
    beta::ListAuthenticationMethodTypesRequest => beta::ListAuthenticationMethodTypesResponse,
        "zitadel.user.v2beta.UserService/ListAuthenticationMethodTypes",
        GET beta_user "/authentication_methods", false;
    beta::RegisterTotpRequest => beta::RegisterTotpResponse,
        "zitadel.user.v2beta.UserService/RegisterTOTP", POST beta_user "/totp", true;
    beta::VerifyTotpRegistrationRequest => beta::VerifyTotpRegistrationResponse,
        "zitadel.user.v2beta.UserService/VerifyTOTPRegistration",
        POST beta_user "/totp/verify", true;
    beta::RemoveTotpRequest => beta::RemoveTotpResponse,
        "zitadel.user.v2beta.UserService/RemoveTOTP", DELETE beta_user "/totp", false;
}

/// ListAuthenticationFactors (v2 and v2beta) takes its filters in REST's query string, a
/// parameter per value.
macro_rules! list_factors {
    ($($package:ident, $version:literal;)*) => {$(
        impl Rpc for $package::ListAuthenticationFactorsRequest {
            type Response = $package::ListAuthenticationFactorsResponse;
            const METHOD: &'static str =
                concat!("zitadel.user.", $version, ".UserService/ListAuthenticationFactors");
            const REST_METHOD: http::Method = http::Method::POST;
            const REST_BODY: bool = false;
            fn rest_path(&self) -> String {
                let kinds = self.auth_factors.iter().map(|&kind| {
                    let name = $package::AuthFactors::try_from(kind).map_or("?", |k| k.as_str_name());
                    format!("authFactors={name}")
                });
                let states = self.states.iter().map(|&state| {
                    let name =
                        $package::AuthFactorState::try_from(state).map_or("?", |s| s.as_str_name());
                    format!("states={name}")
                });
                let query: Vec<String> = kinds.chain(states).collect();
                let path = user_path(&self.user_id, "/authentication_factors/_search")
                    .replacen("/v2/", concat!("/", $version, "/"), 1);
                if query.is_empty() {
                    path
                } else {
                    format!("{path}?{}", query.join("&"))
                }
            }
        }
    )*};
}

list_factors! {
    user_pb, "v2";
    beta, "v2beta";
}

/// `/v2/users/<id><suffix>`, with the id percent-encoded.
pub fn user_path(user_id: &str, suffix: &str) -> String {
    let mut encoded = String::new();
    for byte in user_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("/v2/users/{encoded}{suffix}")
}

/// Why a call did not return its response message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The service answered with an error, well formed.
    Refused(Refusal),
    /// The answer broke the wire contract (what, and what was received).
    Contract(String),
    /// No answer: the connection could not be made or was lost.
    Transport(String),
}

/// What an error answer said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The gRPC code (REST and Connect carry it in their bodies).
    pub code: i32,
    pub message: String,
    /// `(id, message)` of each `zitadel.v1.ErrorDetail`.
    pub details: Vec<(String, String)>,
    /// REST only: the HTTP status.
    pub http_status: Option<u16>,
    /// REST only: the `WWW-Authenticate` header.
    pub www_authenticate: Option<String>,
}

impl Refusal {
    /// The id of the first ErrorDetail, or `code N` when there is none.
    pub fn label(&self) -> String {
        match self.details.first() {
            Some((id, _)) => id.clone(),
            None => format!("code {}", self.code),
        }
    }
}

/// A client of one protocol for one service address. Cheap to share behind an `Arc`; calls may
/// run in parallel.
pub struct Client {
    protocol: Protocol,
    /// `http://host:port`, no trailing slash.
    base: String,
    /// REST, gRPC-web and Connect: HTTP/1.1 connections kept between calls.
    http1: Http1,
    /// gRPC only: HTTP/2 connections used in turn.
    connections: Vec<Http2>,
    next_connection: AtomicUsize,
}

impl Client {
    /// A client of `protocol` for the service at `base` (`http://host:port`). REST, gRPC-web and
    /// Connect open HTTP/1.1 connections as calls need them; gRPC opens `grpc_connections` HTTP/2
    /// connections (at least one) now, and opens one again when it finds it closed.
    pub async fn connect(
        protocol: Protocol,
        base: &str,
        grpc_connections: usize,
    ) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        let origin: http::Uri = base.parse().map_err(|e| format!("{base}: {e}"))?;
        let mut connections = vec![];
        if protocol == Protocol::Grpc {
            for _ in 0..grpc_connections.max(1) {
                let connection = Http2::new(origin.clone())?;
                connection
                    .sender()
                    .await
                    .map_err(|e| format!("{base}: {e:?}"))?;
                connections.push(connection);
            }
        }
        Ok(Client {
            protocol,
            http1: Http1::new(&origin)?,
            base,
            connections,
            next_connection: AtomicUsize::new(0),
        })
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sends `request` with the `authorization` header value, if any.
    pub async fn call<R: Rpc>(
        &self,
        authorization: Option<&str>,
        request: R,
    ) -> Result<R::Response, CallError> {
        match self.protocol {
            Protocol::Rest | Protocol::Connect => {
                let rest = self.protocol == Protocol::Rest;
                let (method, path, body, what) = if rest {
                    let body = R::REST_BODY.then(|| json_of(&request));
                    (R::REST_METHOD, request.rest_path(), body, "REST")
                } else {
                    let path = format!("/{}", R::METHOD);
                    (http::Method::POST, path, Some(json_of(&request)), "Connect")
                };
                let answer = self
                    .send(method, &path, authorization, "application/json", body)
                    .await?;
                if answer.status == 200 {
                    let what = format!("{what} success");
                    expect_content_type(&answer.headers, "application/json", &what)?;
                    return parse_json(&answer.body, &what);
                }
                let refusal = if rest { rest_refusal } else { connect_refusal };
                Err(CallError::Refused(refusal(
                    answer.status,
                    &answer.headers,
                    &answer.body,
                )?))
            }
            Protocol::GrpcWeb => {
                let path = format!("/{}", R::METHOD);
                let body = Some(grpc_web::frame(&request.encode_to_vec()));
                let answer = self
                    .send(
                        http::Method::POST,
                        &path,
                        authorization,
                        "application/grpc-web+proto",
                        body,
                    )
                    .await?;
                grpc_web_answer(&answer)
            }
            Protocol::Grpc => self.grpc(authorization, request).await,
        }
    }

    /// Sends one HTTP/1.1 request to `path` (percent-encoded as a browser would) and reads the
    /// whole answer.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        authorization: Option<&str>,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpAnswer, CallError> {
        let url = url::Url::parse(&format!("{}{path}", self.base)).map_err(transport)?;
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(target)
            .header(http::header::HOST, self.http1.authority.as_str());
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        if content_type.starts_with("application/grpc-web") {
            builder = builder.header("x-grpc-web", "1");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(transport)?;
        self.http1.send(request).await
    }

    async fn grpc<R: Rpc>(
        &self,
        authorization: Option<&str>,
        request: R,
    ) -> Result<R::Response, CallError> {
        let turn = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let connection = &self.connections[turn % self.connections.len()];
        let sender = connection.sender().await?;
        let mut grpc = tonic::client::Grpc::with_origin(sender, connection.origin.clone());
        grpc.ready().await.map_err(transport)?;
        let mut request = tonic::Request::new(request);
        if let Some(value) = authorization {
            let value = value
                .parse()
                .map_err(|_| CallError::Transport("authorization is not ASCII".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        let path = PathAndQuery::try_from(format!("/{}", R::METHOD))
            .map_err(|e| CallError::Transport(format!("{}: {e}", R::METHOD)))?;
        let codec = tonic_prost::ProstCodec::<R, R::Response>::default();
        let status = match grpc.unary(request, path, codec).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => status,
        };
        // tonic reports a failed connection as a status with the failure as its source; a
        // status the service sent has none.
        if let Some(source) = std::error::Error::source(&status) {
            return Err(CallError::Transport(source.to_string()));
        }
        let details = status::error_details(status.details())
            .map_err(|e| contract("grpc-status-details-bin", &e))?;
        Err(CallError::Refused(Refusal {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details,
            http_status: None,
            www_authenticate: None,
        }))
    }
}

/// A whole HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// HTTP/1.1 connections to the service, each carrying one call at a time and kept for the next
/// call when its answer is read. Calls go straight to hyper's connection handle, with none of a
/// general-purpose client's layers (its pool's bookkeeping, redirects, timeouts): the load
/// generator shares the cores with the service it measures, so what it spends per call is taken
/// from the service.
struct Http1 {
    /// `host:port`, also the `Host` header.
    authority: String,
    idle: Mutex<Vec<Http1Sender>>,
}

type Http1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Http1 {
    fn new(origin: &http::Uri) -> Result<Self, String> {
        let authority = origin
            .authority()
            .ok_or_else(|| format!("{origin}: no host"))?;
        Ok(Http1 {
            authority: authority.to_string(),
            idle: Mutex::new(vec![]),
        })
    }

    /// Sends `request` on an idle connection, or on a new one when none is idle. A request a kept
    /// connection could not send (the service had closed it meanwhile) goes again on another:
    /// it never left, so sending it again cannot repeat it.
    async fn send(&self, mut request: http::Request<Full<Bytes>>) -> Result<HttpAnswer, CallError> {
        loop {
            let kept = self.idle.lock().unwrap().pop();
            let reused = kept.is_some();
            let mut sender = match kept {
                Some(sender) => sender,
                None => self.open().await?,
            };
            if let Err(error) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(transport(error));
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err(transport(failed.into_error())),
                },
            };
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(transport)?.to_bytes().to_vec();
            self.idle.lock().unwrap().push(sender);
            return Ok(HttpAnswer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            });
        }
    }

    async fn open(&self) -> Result<Http1Sender, CallError> {
        let stream = tokio::net::TcpStream::connect(self.authority.as_str())
            .await
            .map_err(transport)?;
        stream.set_nodelay(true).map_err(transport)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(transport)?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// One HTTP/2 connection for gRPC, made again when found closed. Calls go
/// straight to hyper's connection handle: tonic's `Channel` would put a buffer task between each
/// call and the connection, one more task wake-up per call on the cores the service shares.
struct Http2 {
    origin: http::Uri,
    sender: Mutex<Option<Sender>>,
}

type Sender = hyper::client::conn::http2::SendRequest<tonic::body::Body>;

impl Http2 {
    fn new(origin: http::Uri) -> Result<Self, String> {
        if origin.authority().is_none() {
            return Err(format!("{origin}: no host"));
        }
        Ok(Http2 {
            origin,
            sender: Mutex::new(None),
        })
    }

    /// The connection's handle, connecting first when there is none or it closed (two calls that
    /// find it closed at once may both connect; the last one made is kept).
    async fn sender(&self) -> Result<SendRequestService, CallError> {
        if let Some(sender) = self.sender.lock().unwrap().as_ref()
            && !sender.is_closed()
        {
            return Ok(SendRequestService(sender.clone()));
        }
        let authority = self.origin.authority().expect("checked in new");
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(transport)?;
        stream.set_nodelay(true).map_err(transport)?;
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(transport)?;
        tokio::spawn(connection);
        *self.sender.lock().unwrap() = Some(sender.clone());
        Ok(SendRequestService(sender))
    }
}

/// hyper's HTTP/2 handle as the tower service tonic's client wants.
#[derive(Clone)]
struct SendRequestService(Sender);

impl tower::Service<http::Request<tonic::body::Body>> for SendRequestService {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

fn transport(error: impl std::fmt::Display) -> CallError {
    CallError::Transport(error.to_string())
}

fn contract(what: &str, problem: &str) -> CallError {
    CallError::Contract(format!("{what}: {problem}"))
}

fn json_of(request: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(request).expect("a message serializes to JSON")
}

fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| {
        contract(
            what,
            &format!(
                "does not parse as the response: {e}: {}",
                String::from_utf8_lossy(body)
            ),
        )
    })
}

fn expect_content_type(
    headers: &http::HeaderMap,
    expected: &str,
    what: &str,
) -> Result<(), CallError> {
    let found = headers.get("content-type").and_then(|v| v.to_str().ok());
    if found == Some(expected) {
        Ok(())
    } else {
        Err(contract(
            &format!("{what} content type"),
            &format!("{found:?}, not {expected}"),
        ))
    }
}

/// REST's error body (`{code, message, details: [{@type, id, message}]}`), checked for shape.
pub fn rest_refusal(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Refusal, CallError> {
    expect_content_type(headers, "application/json", "REST error")?;
    let body: serde_json::Value = parse_json(body, "REST error body")?;
    let details = body["details"]
        .as_array()
        .ok_or_else(|| contract("REST error", "details is not an array"))?
        .iter()
        .map(|detail| {
            if detail["@type"] != status::ERROR_DETAIL_TYPE_URL {
                return Err(contract("REST error detail", &detail["@type"].to_string()));
            }
            match (detail["id"].as_str(), detail["message"].as_str()) {
                (Some(id), Some(message)) => Ok((id.to_owned(), message.to_owned())),
                _ => Err(contract("REST error detail", &detail.to_string())),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Refusal {
        code: body["code"]
            .as_i64()
            .ok_or_else(|| contract("REST error", "code is not a number"))? as i32,
        message: body["message"]
            .as_str()
            .ok_or_else(|| contract("REST error", "no message"))?
            .to_owned(),
        details,
        http_status: Some(status),
        www_authenticate: headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

/// The gRPC code and HTTP status of each Connect code name.
const CONNECT_CODES: &[(&str, i32, u16)] = &[
    ("invalid_argument", 3, 400),
    ("deadline_exceeded", 4, 504),
    ("not_found", 5, 404),
    ("already_exists", 6, 409),
    ("permission_denied", 7, 403),
    ("resource_exhausted", 8, 429),
    ("failed_precondition", 9, 400),
    ("unimplemented", 12, 501),
    ("internal", 13, 500),
    ("unavailable", 14, 503),
    ("unauthenticated", 16, 401),
];

/// Connect's error JSON (`{code: name, message, details: [{type, value}]}`), its code name checked
/// against the HTTP status Connect gives it.
pub fn connect_refusal(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Refusal, CallError> {
    expect_content_type(headers, "application/json", "Connect error")?;
    let body: serde_json::Value = parse_json(body, "Connect error body")?;
    let name = body["code"].as_str().unwrap_or_default();
    let Some(&(_, code, expected_status)) = CONNECT_CODES.iter().find(|(n, ..)| *n == name) else {
        return Err(contract("Connect error", &format!("unknown code {name:?}")));
    };
    if status != expected_status {
        return Err(contract(
            "Connect error",
            &format!("code {name} came with HTTP {status}, not {expected_status}"),
        ));
    }
    let details = body["details"]
        .as_array()
        .ok_or_else(|| contract("Connect error", "details is not an array"))?
        .iter()
        .map(connect_detail)
        .collect::<Result<_, _>>()?;
    Ok(Refusal {
        code,
        message: body["message"]
            .as_str()
            .ok_or_else(|| contract("Connect error", "no message"))?
            .to_owned(),
        details,
        http_status: None,
        www_authenticate: None,
    })
}

fn connect_detail(detail: &serde_json::Value) -> Result<(String, String), CallError> {
    if detail["type"] != "zitadel.v1.ErrorDetail" {
        return Err(contract(
            "Connect error detail",
            &detail["type"].to_string(),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(
            detail["value"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('='),
        )
        .map_err(|e| contract("Connect error detail value", &e.to_string()))?;
    let detail = ErrorDetail::decode(bytes.as_slice())
        .map_err(|e| contract("Connect error detail value", &e.to_string()))?;
    Ok((detail.id, detail.message))
}

/// A gRPC-web answer: HTTP 200 always, the status in the trailer frame (or the headers).
fn grpc_web_answer<M: Message + Default>(answer: &HttpAnswer) -> Result<M, CallError> {
    if answer.status != 200 {
        return Err(contract(
            "gRPC-web",
            &format!("HTTP {}, not 200", answer.status),
        ));
    }
    let (messages, trailers) = grpc_web::parse_body(&answer.body);
    let field = |name: &str| grpc_web::field(&answer.headers, &trailers, name);
    let code: i32 = field("grpc-status")
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| contract("gRPC-web", "no grpc-status"))?;
    if code == 0 {
        let first = messages
            .first()
            .ok_or_else(|| contract("gRPC-web", "no response message"))?;
        return M::decode(first.as_slice())
            .map_err(|e| contract("gRPC-web message", &e.to_string()));
    }
    let details = match field("grpc-status-details-bin") {
        None => vec![],
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.trim_end_matches('='))
                .map_err(|e| contract("grpc-status-details-bin", &e.to_string()))?;
            status::error_details(&bytes).map_err(|e| contract("grpc-status-details-bin", &e))?
        }
    };
    Err(CallError::Refused(Refusal {
        code,
        message: status::percent_decode(&field("grpc-message").unwrap_or_default()),
        details,
        http_status: None,
        www_authenticate: None,
    }))
}
