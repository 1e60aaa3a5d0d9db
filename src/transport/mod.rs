//! HTTP, gRPC and JSON, and nothing of SQL: one axum router on one port serving REST, gRPC
//! (h2c) and gRPC-web for every RPC, plus health, readiness, gRPC health and reflection.
//! Every RPC is declared once in [`rpcs`]; authentication is [`auth::Authenticator`], used by
//! every protocol; how an error looks on each protocol is decided in [`status`].

pub mod auth;
pub mod body;
pub mod codec;
pub mod connect;
pub mod grpc;
pub mod messages;
pub mod observe;
pub mod openapi;
pub mod rest;
pub mod rpcs;
pub mod status;
pub mod ui;
pub mod v2beta;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method};
use tonic::server::NamedService;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::domain::Service as Domain;
use crate::proto;
use auth::Authenticator;

/// Largest request body or message accepted (SPEC.md §6).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the router treats clients (from the configuration).
#[derive(Clone, Debug, Default)]
pub struct RouterOptions {
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// Longest a client may take to send a request body.
    pub body_read_timeout: std::time::Duration,
}

/// What every handler needs: the domain service and the authenticator. Cloned for every
/// request (axum's state, tonic's services), so it is one shared pointer.
#[derive(Clone)]
pub struct Api(Arc<ApiParts>);

/// The parts of an [`Api`], reached through it.
pub struct ApiParts {
    pub service: Domain,
    pub auth: Authenticator,
    /// Set once shutdown began: `/readyz` answers 503 so load balancers stop sending.
    pub draining: Arc<AtomicBool>,
}

impl Api {
    pub fn new(parts: ApiParts) -> Self {
        Api(Arc::new(parts))
    }
}

impl std::ops::Deref for Api {
    type Target = ApiParts;

    fn deref(&self) -> &ApiParts {
        &self.0
    }
}

/// Reads a request message from its proto3 JSON form, where `null` for any field means the field
/// is absent. The generated deserializers refuse `null` for plain fields, so a body they refuse
/// is read again with its `null` members removed (the common body never pays for that); the
/// first error is the one reported.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let first_error = match serde_json::from_slice(bytes) {
        Ok(message) => return Ok(message),
        Err(error) => error,
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Err(first_error);
    };
    if !remove_nulls(&mut value) {
        return Err(first_error);
    }
    serde_json::from_value(value).map_err(|_| first_error)
}

/// Removes the `null` members of every object in `value`; whether there were any.
fn remove_nulls(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(members) => {
            let before = members.len();
            members.retain(|_, member| !member.is_null());
            let mut removed = members.len() != before;
            for member in members.values_mut() {
                removed |= remove_nulls(member);
            }
            removed
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |removed, item| remove_nulls(item) | removed),
        _ => false,
    }
}

/// Adds one gRPC service, also reachable as gRPC-web, under `/<package>.<Service>/*`.
fn add_grpc_web<S>(router: Router, service: S) -> Router
where
    S: NamedService,
    GrpcWebService<S>: Service<http::Request<axum::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <GrpcWebService<S> as Service<http::Request<axum::body::Body>>>::Response:
        axum::response::IntoResponse,
    <GrpcWebService<S> as Service<http::Request<axum::body::Body>>>::Future: Send + 'static,
{
    router.route_service(
        &format!("/{}/{{*method}}", S::NAME),
        GrpcWebLayer::new().layer(service),
    )
}

/// Adds one gRPC service for native gRPC only (see [`NativeGrpcFirst`]).
fn add_grpc<S>(router: Router, service: S) -> Router
where
    S: NamedService
        + Service<http::Request<axum::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    router.route_service(&format!("/{}/{{*method}}", S::NAME), service)
}

/// Whether a request is native gRPC: HTTP/2 with `application/grpc` (not gRPC-web, whose
/// content type starts alike).
fn is_native_grpc<B>(request: &http::Request<B>) -> bool {
    request.version() >= http::Version::HTTP_2
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.starts_with("application/grpc") && !ct.starts_with("application/grpc-web")
            })
}

/// Sends native gRPC straight to the gRPC services and everything else through the full
/// router. The full router's layers are for browsers and HTTP/1 (CORS, gRPC-web translation,
/// reading HTTP/1 bodies, the Connect protocol), none of which a native gRPC call can use; on its
/// own path a gRPC call costs measurably less CPU (docs/performance.md).
#[derive(Clone)]
struct NativeGrpcFirst {
    grpc: Router,
    full: Router,
}

impl Service<http::Request<axum::body::Body>> for NativeGrpcFirst {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        // A router is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum::body::Body>) -> Self::Future {
        if is_native_grpc(&request) {
            self.grpc.call(request)
        } else {
            self.full.call(request)
        }
    }
}

/// CORS for browsers on the configured origins (REST and gRPC-web alike).
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed)
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(
            [
                "authorization",
                "content-type",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "connect-protocol-version",
                "x-request-id",
            ]
            .map(HeaderName::from_static),
        )
        .expose_headers(
            [
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "x-request-id",
            ]
            .map(HeaderName::from_static),
        )
}

/// The span of one request (see [`router`]).
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        rpc = tracing::field::Empty,
        protocol = tracing::field::Empty,
        user_id = tracing::field::Empty,
        code = tracing::field::Empty,
    )
}

/// Marks gRPC-web requests, so that the gRPC handlers (which see them translated to gRPC) can
/// tell the two apart in metrics and logs.
async fn tag_protocol(
    mut request: http::Request<axum::body::Body>,
) -> http::Request<axum::body::Body> {
    let is_grpc_web = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc-web"));
    if is_grpc_web {
        request.extensions_mut().insert(observe::Protocol::GrpcWeb);
    }
    request
}

/// The whole router: REST routes, gRPC and gRPC-web services, health, with explicit 404 and 405.
/// Native gRPC takes a shorter way to the same services (see [`NativeGrpcFirst`]); every request,
/// whichever way, gets a request id and a span.
pub async fn router(api: Api, options: &RouterOptions) -> anyhow::Result<Router> {
    use proto::totpservice::v1::totp_service_server::TotpServiceServer;
    use proto::zitadel::user::v2::user_service_server::UserServiceServer;
    use proto::zitadel::user::v2beta::user_service_server::UserServiceServer as BetaUserServiceServer;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<UserServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<TotpServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<BetaUserServiceServer<Api>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?
        .max_decoding_message_size(MAX_BODY_BYTES);
    let health_service = health_service.max_decoding_message_size(MAX_BODY_BYTES);

    let users = UserServiceServer::new(api.clone()).max_decoding_message_size(MAX_BODY_BYTES);
    let totp = TotpServiceServer::new(api.clone()).max_decoding_message_size(MAX_BODY_BYTES);
    let users_beta =
        BetaUserServiceServer::new(api.clone()).max_decoding_message_size(MAX_BODY_BYTES);

    let mut grpc = Router::new();
    grpc = add_grpc_web(grpc, users.clone());
    grpc = add_grpc_web(grpc, totp.clone());
    grpc = add_grpc_web(grpc, users_beta.clone());
    grpc = add_grpc_web(grpc, health_service.clone());
    grpc = add_grpc_web(grpc, reflection.clone());
    let grpc = grpc
        .layer(axum::middleware::map_response(
            codec::client_mistakes_are_invalid_argument,
        ))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            connect::intercept,
        ));

    let mut native_grpc = Router::new();
    native_grpc = add_grpc(native_grpc, users);
    native_grpc = add_grpc(native_grpc, totp);
    native_grpc = add_grpc(native_grpc, users_beta);
    native_grpc = add_grpc(native_grpc, health_service);
    native_grpc = add_grpc(native_grpc, reflection);
    let native_grpc = native_grpc.layer(axum::middleware::map_response(
        codec::client_mistakes_are_invalid_argument,
    ));

    let rest = rpcs::rest_routes()
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/ui/enroll", get(ui::enroll_page))
        .route("/ui/enroll.js", get(ui::enroll_script))
        .route("/ui/enroll.css", get(ui::enroll_style))
        .route("/ui/qr", axum::routing::post(ui::qr_code))
        .method_not_allowed_fallback(rest::method_not_allowed)
        .with_state(api);

    // One span per request: method, path, request id, and (filled in by the handler) RPC,
    // protocol, user id and gRPC code; status and latency when it ends. Headers are not logged:
    // they carry the token; no field ever holds a secret or a code.
    let trace = TraceLayer::new_for_http()
        .make_span_with(request_span)
        .on_response(DefaultOnResponse::new().level(Level::INFO))
        // Every answer's status is in the line above; the causes of server faults are logged
        // where they happen (once per outage for a database that is away), not per response.
        .on_failure(());
    let full = rest
        .merge(grpc)
        .fallback(rest::not_found)
        .layer(axum::middleware::from_fn_with_state(
            options.body_read_timeout,
            body::read_whole,
        ))
        .layer(cors(&options.cors_origins))
        .layer(axum::middleware::map_request(tag_protocol));
    let dispatch = NativeGrpcFirst {
        // An unknown service is a gRPC answer too (code 12), as gRPC servers give it.
        grpc: native_grpc.fallback(|| async {
            tonic::Status::unimplemented("No such service").into_http::<axum::body::Body>()
        }),
        full,
    };
    Ok(Router::new()
        .fallback_service(dispatch)
        // Native gRPC reads its body as it comes: a stream whose client pauses longer than the
        // body timeout between frames is ended (the other protocols get a total timeout).
        .layer(RequestBodyTimeoutLayer::new(options.body_read_timeout))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRandomRequestId)))
}

/// Makes the id of a request that came without one: a random (version 4) UUID drawn from the
/// thread's generator. tower-http's `MakeRequestUuid` asks the kernel for every one (a
/// `getrandom` call per request; docs/performance.md).
#[derive(Clone, Copy)]
struct MakeRandomRequestId;

impl MakeRequestId for MakeRandomRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes: [u8; 16] = rand::random();
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 9562 variant
        let mut text = [0u8; 36];
        let mut at = 0;
        for (index, byte) in bytes.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                text[at] = b'-';
                at += 1;
            }
            text[at] = HEX[usize::from(byte >> 4)];
            text[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        HeaderValue::from_bytes(&text).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::zitadel::user::v2 as user_pb;

    #[test]
    fn json_null_means_the_field_is_absent() {
        let request: user_pb::AddHumanUserRequest = decode_json(
            br#"{"userId": null, "username": null, "profile": {"givenName": "A", "familyName": "B", "nickName": null},
                "email": {"email": "a@example.com", "isVerified": null}, "organization": null, "totpSecret": null}"#,
        )
        .unwrap();
        assert_eq!(request.user_id, None);
        assert_eq!(request.profile.unwrap().given_name, "A");
        assert!(request.organization.is_none());
        let request: user_pb::VerifyTotpRegistrationRequest =
            decode_json(br#"{"userId": "u", "code": null}"#).unwrap();
        assert_eq!(request.code, "");
        assert!(
            decode_json::<user_pb::VerifyTotpRegistrationRequest>(br#"{"code": 12,}"#).is_err()
        );
    }
}
