//! Tokens from a JWKS: served over HTTP or read from a file, with RS256 and ES256 keys (EdDSA is
//! the local key every other test uses); a key not in the set is refused. Also gRPC health and
//! reflection, which need no token.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::TcpListener;

use crate::support::*;
use totp_service::transport::auth::token_claims;

const RS256_PEM: &[u8] = include_bytes!("../fixtures/rs256-test-key.pem");
const ES256_PEM: &[u8] = include_bytes!("../fixtures/es256-test-key.pem");

/// The two test keys, with their key ids and algorithms.
fn keys() -> Vec<(&'static str, Algorithm, EncodingKey)> {
    vec![
        (
            "rsa-1",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RS256_PEM).unwrap(),
        ),
        (
            "ec-1",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ES256_PEM).unwrap(),
        ),
    ]
}

fn jwks_json() -> String {
    let keys = keys()
        .into_iter()
        .map(|(kid, alg, key)| {
            let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// Serves `body` as the JWKS on 127.0.0.1 (the identity provider of the test).
async fn serve_jwks(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/keys")
}

fn signed(h: &Harness, kid: &str, alg: Algorithm, key: &EncodingKey, subject: &str) -> Auth {
    let grants = [
        ("user.write".to_owned(), "*".to_owned()),
        ("user.read".to_owned(), "*".to_owned()),
    ];
    let claims = token_claims(&h.rules(), subject, &grants, None, Duration::from_secs(300));
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    Auth::bearer(&jsonwebtoken::encode(&header, &claims, key).unwrap())
}

async fn rs256_and_es256_tokens_are_trusted(h: &Harness) {
    for (kid, alg, key) in keys() {
        let auth = signed(h, kid, alg, &key, &format!("admin-{kid}"));
        let user = TestUser {
            id: unique("user"),
            org: unique("org"),
            email: "a@example.com".into(),
        };
        h.add_human_user(&auth, human_request(&user))
            .await
            .unwrap_or_else(|e| panic!("{kid}: {e:?}"));
        h.get_user(&auth, &user.id).await.unwrap();
    }
    // The local key is not in this JWKS, so its tokens are refused.
    let error = h.get_user(&h.admin(), "someone").await.unwrap_err();
    assert_eq!(error.code, 16);
    assert_eq!(error.message, "Errors.Token.Invalid (AUTH-7fs1e)");
}

pub async fn tokens_verify_against_a_jwks_url(backend: Backend, protocol: Protocol) {
    let mut options = Options::new(backend, protocol);
    options.jwks = Some(serve_jwks(jwks_json()).await);
    let h = Harness::start(options).await;
    rs256_and_es256_tokens_are_trusted(&h).await;
}

pub async fn tokens_verify_against_a_jwks_file(backend: Backend, protocol: Protocol) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_json()).unwrap();
    let mut options = Options::new(backend, protocol);
    options.jwks = Some(path.display().to_string());
    let h = Harness::start(options).await;
    rs256_and_es256_tokens_are_trusted(&h).await;
}

pub async fn grpc_health_and_reflection_answer_without_a_token(
    backend: Backend,
    protocol: Protocol,
) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let h = Harness::start(Options::new(backend, protocol)).await;
    let channel = h.grpc_channel().await;
    for service in [
        "",
        "zitadel.user.v2.UserService",
        "totpservice.v1.TOTPService",
    ] {
        let answer = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"zitadel.user.v2.UserService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"totpservice.v1.TOTPService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

/// Serves `router` on 127.0.0.1; its base URL.
async fn serve_router(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// A JWKS URL is fetched without following redirects (the keys must come from the configured
/// place) and without reading more than 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_urls_are_not_redirected_nor_read_past_one_mib() {
    use totp_service::transport::auth::{Authenticator, JwksSource};
    let keys = jwks_json();
    let padding = "x".repeat(1024 * 1024);
    let oversized = format!(r#"{},"padding":"{padding}"}}"#, keys.trim_end_matches('}'));
    let base = serve_router(
        axum::Router::new()
            .route(
                "/keys",
                axum::routing::get(move || {
                    let keys = keys.clone();
                    async move { keys }
                }),
            )
            .route(
                "/moved",
                axum::routing::get(|| async { axum::response::Redirect::permanent("/keys") }),
            )
            .route(
                "/huge",
                axum::routing::get(move || {
                    let oversized = oversized.clone();
                    async move { oversized }
                }),
            ),
    )
    .await;
    let rules = totp_service::transport::auth::TokenRules {
        issuer: ISSUER.into(),
        audience: Some(AUDIENCE.into()),
        roles_claim: ROLES_CLAIM.into(),
    };
    let open = |path: &str| {
        let source = JwksSource::parse(&format!("{base}{path}")).unwrap();
        Authenticator::new(source, rules.clone())
    };
    assert!(open("/keys").await.is_ok());
    let redirected = open("/moved").await.err().expect("a redirect is refused");
    assert!(format!("{redirected:#}").contains("308"), "{redirected:#}");
    let huge = open("/huge")
        .await
        .err()
        .expect("a body over 1 MiB is refused");
    assert!(format!("{huge:#}").contains("larger than"), "{huge:#}");
}
