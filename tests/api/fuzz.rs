//! A property test over the wire: random methods, paths, headers and bodies on each protocol
//! (REST, Connect and gRPC-web over HTTP/1.1, native gRPC over HTTP/2), drawn from a seeded
//! generator (the seed is printed, and `FUZZ_SEED` replays it). Whatever a client sends, the
//! service answers without a server error: no HTTP 5xx but 503, no gRPC code 13, and it stays
//! up.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::support::*;

/// Requests per protocol.
const CASES: usize = 400;

const METHODS: [&str; 7] = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"];

const RPCS: [&str; 18] = [
    "zitadel.user.v2.UserService/AddHumanUser",
    "zitadel.user.v2.UserService/GetUserByID",
    "zitadel.user.v2.UserService/DeleteUser",
    "zitadel.user.v2.UserService/LockUser",
    "zitadel.user.v2.UserService/UnlockUser",
    "zitadel.user.v2.UserService/ListAuthenticationMethodTypes",
    "zitadel.user.v2.UserService/ListAuthenticationFactors",
    "zitadel.user.v2.UserService/RegisterTOTP",
    "zitadel.user.v2.UserService/VerifyTOTPRegistration",
    "zitadel.user.v2.UserService/RemoveTOTP",
    "totpservice.v1.TOTPService/CheckTOTP",
    "zitadel.user.v2beta.UserService/AddHumanUser",
    "zitadel.user.v2beta.UserService/VerifyTOTPRegistration",
    "totpservice.v1.TOTPService/ImportTOTP",
    "grpc.health.v1.Health/Check",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "zitadel.user.v2.UserService/NoSuchMethod",
    "no.such.Service/Call",
];

const CONTENT_TYPES: [&str; 9] = [
    "application/json",
    "application/json; charset=utf-8",
    "application/proto",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc",
    "text/plain",
    "multipart/form-data; boundary=x",
    "appl\u{7f}ication/json",
];

const JSON_KEYS: [&str; 16] = [
    "userId",
    "user_id",
    "code",
    "organization",
    "orgId",
    "orgDomain",
    "profile",
    "givenName",
    "familyName",
    "nickName",
    "email",
    "isVerified",
    "username",
    "totpSecret",
    "gender",
    "service",
];

/// A random string: printable text, control characters, odd Unicode, or nothing.
fn text(rng: &mut StdRng, user: &str) -> String {
    match rng.gen_range(0..8) {
        0 => user.to_owned(),
        1 => String::new(),
        2 => "\u{0}".repeat(rng.gen_range(1..4)),
        3 => "x".repeat(rng.gen_range(150..400)),
        4 => "💥\u{202e}\u{feff}é".to_owned(),
        5 => format!("{:06}", rng.gen_range(0..1_000_000)),
        _ => (0..rng.gen_range(1..12))
            .map(|_| char::from(rng.gen_range(0x01u8..0x7f)))
            .collect(),
    }
}

/// A random JSON value, up to `depth` levels deep.
fn json_value(rng: &mut StdRng, user: &str, depth: u32) -> serde_json::Value {
    use serde_json::Value;
    match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.r#gen()),
        2 => serde_json::json!(rng.r#gen::<i64>()),
        3 => serde_json::json!(rng.r#gen::<f64>() * 1e300),
        4 | 5 => Value::String(text(rng, user)),
        6 => Value::Array(
            (0..rng.gen_range(0..3))
                .map(|_| json_value(rng, user, depth - 1))
                .collect(),
        ),
        _ => json_object(rng, user, depth - 1),
    }
}

fn json_object(rng: &mut StdRng, user: &str, depth: u32) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for _ in 0..rng.gen_range(0..5) {
        let key = JSON_KEYS.choose(rng).unwrap().to_string();
        object.insert(key, json_value(rng, user, depth));
    }
    serde_json::Value::Object(object)
}

/// A random body: JSON-shaped, broken JSON, protobuf-ish bytes, a gRPC-web frame, or nothing.
fn body(rng: &mut StdRng, user: &str) -> Vec<u8> {
    let random_bytes =
        |rng: &mut StdRng| -> Vec<u8> { (0..rng.gen_range(0..64)).map(|_| rng.r#gen()).collect() };
    match rng.gen_range(0..7) {
        0 => Vec::new(),
        1 | 2 => json_object(rng, user, 2).to_string().into_bytes(),
        3 => {
            let mut json = json_object(rng, user, 2).to_string().into_bytes();
            let cut = rng.gen_range(0..=json.len());
            json.truncate(cut);
            json
        }
        4 => random_bytes(rng),
        5 => totp_client::grpc_web::frame(&random_bytes(rng)),
        _ => {
            // A frame whose length says more (or less) than follows.
            let mut frame = totp_client::grpc_web::frame(&random_bytes(rng));
            let claimed: u32 = rng.gen_range(0..100_000);
            frame[1..5].copy_from_slice(&claimed.to_be_bytes());
            frame
        }
    }
}

/// A random path: a REST path with a random id, a service path, or something else.
fn path(rng: &mut StdRng, user: &str) -> String {
    let id = match rng.gen_range(0..6) {
        0 => user.to_owned(),
        1 => "human".to_owned(),
        2 => String::new(),
        3 => "%FF%FE".to_owned(),
        4 => "a%00b%0A".to_owned(),
        _ => format!("%{:02X}x", rng.r#gen::<u8>()),
    };
    match rng.gen_range(0..6) {
        0 => format!(
            "/v2/users/{id}{}",
            [
                "",
                "/totp",
                "/totp/verify",
                "/totp/check",
                "/lock",
                "/unlock",
                "/authentication_methods"
            ]
            .choose(rng)
            .unwrap()
        ),
        1 => "/v2/users/human".to_owned(),
        2 | 3 => format!("/{}", RPCS.choose(rng).unwrap()),
        4 => [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/ui/enroll",
            "/ui/qr",
            "/",
            "/v2/",
        ]
        .choose(rng)
        .unwrap()
        .to_string(),
        _ => format!("/{id}/{id}"),
    }
}

/// The gRPC status of an answer on the gRPC-web or gRPC paths (headers or trailer frame).
fn grpc_status(headers: &http::HeaderMap, bytes: &[u8]) -> Option<String> {
    let (_, trailers) = totp_client::grpc_web::parse_body(bytes);
    totp_client::grpc_web::field(headers, &trailers, "grpc-status")
}

pub async fn random_requests_never_get_a_server_error(backend: Backend, protocol: Protocol) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let user = h.new_user().await.id;
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{protocol:?}: FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let admin = h.admin();
    let auths = [
        admin.header().unwrap().to_owned(),
        "Bearer not.a.jwt".to_owned(),
        "Basic dXNlcjpwdw==".to_owned(),
        String::new(),
    ];
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    for case in 0..CASES {
        if protocol == Protocol::Grpc {
            // Reflection is a stream, which a unary client cannot call (it reports a missing
            // answer as its own 13); the other protocols send to it as well.
            let method = RPCS
                .iter()
                .filter(|m| !m.contains("Reflection"))
                .collect::<Vec<_>>()
                .choose(&mut rng)
                .copied()
                .unwrap();
            let auth = Auth::Header(auths.choose(&mut rng).unwrap().clone());
            let message = body(&mut rng, &user);
            let (code, message_text) = h.grpc_raw(method, &auth, message.clone()).await;
            assert_ne!(
                code, 13,
                "case {case} (FUZZ_SEED={seed}): {method} {message:?}: {message_text}"
            );
            continue;
        }
        let (method, path, content_type) = match protocol {
            Protocol::Rest => (
                *METHODS.choose(&mut rng).unwrap(),
                path(&mut rng, &user),
                *CONTENT_TYPES.choose(&mut rng).unwrap(),
            ),
            Protocol::Connect => (
                "POST",
                format!("/{}", RPCS.choose(&mut rng).unwrap()),
                *["application/json", "application/proto"]
                    .choose(&mut rng)
                    .unwrap(),
            ),
            _ => (
                "POST",
                format!("/{}", RPCS.choose(&mut rng).unwrap()),
                *["application/grpc-web+proto", "application/grpc-web-text"]
                    .choose(&mut rng)
                    .unwrap(),
            ),
        };
        let body = body(&mut rng, &user);
        let url = format!("http://{}{}", h.addr, path);
        let mut request = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &url,
            )
            .body(body.clone());
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            request = request.header("content-type", value);
        }
        let auth = auths.choose(&mut rng).unwrap();
        if !auth.is_empty() {
            request = request.header("authorization", auth.as_str());
        }
        if rng.gen_bool(0.2) {
            request = request.header("grpc-timeout", format!("{}m", rng.gen_range(0..100)));
        }
        if rng.gen_bool(0.2) {
            request = request.header("connect-protocol-version", "1");
        }
        let shown = format!(
            "case {case} (FUZZ_SEED={seed}): {method} {path} {content_type} {}",
            String::from_utf8_lossy(&body)
        );
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{shown}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        assert!(
            status < 500,
            "{shown}: HTTP {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if let Some(code) = grpc_status(&headers, &bytes) {
            assert_ne!(
                code,
                "13",
                "{shown}: grpc-status 13 {:?}",
                headers.get("grpc-message")
            );
        }
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            assert_ne!(json["code"], 13, "{shown}: {json}");
            assert_ne!(json["code"], "internal", "{shown}: {json}");
        }
    }
    // Still up and serving.
    let fresh = h.new_user().await;
    h.get_user(&h.admin(), &fresh.id).await.unwrap();
}
