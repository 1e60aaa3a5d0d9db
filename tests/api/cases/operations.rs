//! What operators see: health endpoints, metrics, request ids, the enrolment page.

use super::*;
use crate::support::*;

pub async fn rest_health_endpoints_answer(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (status, _, _) = h.rest_raw("GET", "/healthz", &Auth::None, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = h.rest_raw("GET", "/readyz", &Auth::None, None).await;
    assert_eq!(status, 200);
}

pub async fn metrics_count_requests_by_rpc_protocol_and_code(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_ready_totp().await;
    let wrong = if h.code(&secret, 1) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_is(
        h.check_totp(&h.admin(), &user.id, wrong).await,
        INVALID_CODE,
    );
    let (status, headers, body) = h.rest_raw("GET", "/metrics", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).unwrap();
    let protocol_label = match protocol {
        Protocol::Rest => "rest",
        Protocol::Grpc => "grpc",
        Protocol::GrpcWeb => "grpc-web",
        Protocol::Connect => "connect",
    };
    let count = |prefix: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(prefix) && labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let verified = format!("protocol=\"{protocol_label}\"");
    assert!(
        count(
            "totp_requests_total{",
            &["rpc=\"VerifyTOTPRegistration\"", &verified, "code=\"0\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_requests_total{",
            &["rpc=\"CheckTOTP\"", &verified, "code=\"3\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_code_outcomes_total{",
            &["rpc=\"check\"", "outcome=\"invalid\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_code_outcomes_total{",
            &["rpc=\"verify\"", "outcome=\"ok\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(
            "totp_request_duration_seconds_count{",
            &["rpc=\"CheckTOTP\"", &verified]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("totp_db_connections{state=\"idle\"}"),
        "{text}"
    );
}

pub async fn request_ids_are_taken_or_made_and_echoed(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/healthz", h.addr);
    let given = http
        .get(&url)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-42");
    let made = http.get(&url).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_random_uuid(&id);
    let again = http.get(&url).send().await.unwrap();
    assert_ne!(
        again.headers()["x-request-id"],
        id.as_str(),
        "each made id is new"
    );

    // Native gRPC takes a shorter path through the server (no CORS, no gRPC-web): the same ids.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(h.grpc_channel().await);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "req-43".parse().unwrap());
    let given = health.check(request).await.unwrap();
    assert_eq!(given.metadata().get("x-request-id").unwrap(), "req-43");
    let made = health.check(HealthCheckRequest::default()).await.unwrap();
    let id = made
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_random_uuid(&id);
}

/// A lower-case hyphenated version 4 UUID of the RFC 9562 variant, as made for a request.
fn assert_random_uuid(id: &str) {
    let groups: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    assert_eq!(lengths, [8, 4, 4, 4, 12], "a hyphenated UUID: {id}");
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "lower-case hex: {id}"
    );
    assert!(groups[2].starts_with('4'), "version 4: {id}");
    assert!(
        groups[3].starts_with(['8', '9', 'a', 'b']),
        "RFC 9562 variant: {id}"
    );
}

pub async fn the_enrolment_page_and_its_qr_codes_are_served(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (status, headers, body) = h.rest_raw("GET", "/ui/enroll", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(r#"<script src="/ui/enroll.js"></script>"#));
    assert!(
        !page.contains("<style") && page.matches("<script").count() == 1,
        "no inline code"
    );
    let (status, headers, script) = h.rest_raw("GET", "/ui/enroll.js", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let script = String::from_utf8(script).unwrap();
    for needle in [
        "zitadel.user.v2.UserService/RegisterTOTP",
        "zitadel.user.v2.UserService/VerifyTOTPRegistration",
        "application/grpc-web+proto",
        "/ui/qr",
    ] {
        assert!(script.contains(needle), "the page uses {needle}");
    }
    let (status, headers, _) = h.rest_raw("GET", "/ui/enroll.css", &Auth::None, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    let user = h.new_user().await;
    let uri = h.register_totp(&h.admin(), &user.id).await.unwrap().uri;
    let (status, headers, svg) = h
        .rest_raw_typed(
            "POST",
            "/ui/qr",
            &Auth::None,
            Some(("text/plain", uri.into_bytes())),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/svg+xml");
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    assert!(
        !svg.contains("otpauth"),
        "the secret is drawn, not written, into the picture"
    );
}
