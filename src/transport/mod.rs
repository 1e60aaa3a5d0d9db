//! HTTP, gRPC and JSON, and nothing of SQL: one axum router on one port serving REST, gRPC
//! (h2c) and gRPC-web for every RPC, plus health, readiness, gRPC health and reflection.
//! Authentication is [`auth::Authenticator`], used by both faces; errors are mapped to the wire in
//! `grpc.rs` (tonic `Status`) and `rest.rs` (the REST error body) and nowhere else.

pub mod auth;
pub mod grpc;
pub mod rest;
pub mod rpc;

use std::convert::Infallible;

use axum::Router;
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method};
use tonic::server::NamedService;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::domain::{Error, Service as Domain};
use crate::proto;
use auth::Authenticator;

/// Largest request body or message accepted (SPEC.md §6).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs: the domain service and the authenticator. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub service: Domain,
    pub auth: Authenticator,
}

/// Logs the cause of a server-side failure once; the client only sees the generic message.
pub(crate) fn log_server_fault(error: &Error) {
    if error.is_server_fault() {
        tracing::error!(error = %error, "request failed");
    }
}

/// Adds one gRPC service, also reachable as gRPC-web, under `/<package>.<Service>/*`.
fn add_grpc<S>(router: Router, service: S) -> Router
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

/// The whole router: REST routes, gRPC and gRPC-web services, health, with explicit 404 and 405.
pub async fn router(api: Api, cors_origins: &[String]) -> anyhow::Result<Router> {
    use proto::totpservice::v1::totp_service_server::TotpServiceServer;
    use proto::zitadel::user::v2::user_service_server::UserServiceServer;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<UserServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<TotpServiceServer<Api>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let users = UserServiceServer::new(api.clone()).max_decoding_message_size(MAX_BODY_BYTES);
    let totp = TotpServiceServer::new(api.clone()).max_decoding_message_size(MAX_BODY_BYTES);

    let mut grpc = Router::new();
    grpc = add_grpc(grpc, users);
    grpc = add_grpc(grpc, totp);
    grpc = add_grpc(grpc, health_service);
    grpc = add_grpc(grpc, reflection);

    let rest = rest::routes()
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .method_not_allowed_fallback(rest::method_not_allowed)
        .with_state(api);

    // One span per request with method, path (which holds the user id, never a secret or a
    // code) and, when it ends, status and latency. Headers are not logged: they carry the token.
    let trace = TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
        .on_response(DefaultOnResponse::new().level(Level::INFO));
    Ok(rest
        .merge(grpc)
        .fallback(rest::not_found)
        .layer(cors(cors_origins))
        .layer(trace))
}
