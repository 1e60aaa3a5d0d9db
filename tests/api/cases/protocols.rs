//! What is particular to one protocol: REST's JSON forms, paths and bodies; gRPC's unknown
//! services; Connect's protobuf bodies.

use totp_service::proto::zitadel::user::v2 as user_pb;

use super::*;
use crate::support::*;

pub async fn rest_accepts_snake_case_and_camel_case_keys(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let admin = h.admin();
    for (style, body) in [
        (
            "camel",
            r#"{"userId":"ID","organization":{"orgId":"ORG"},"profile":{"givenName":"A","familyName":"B"},"email":{"email":"a@example.com","isVerified":true},"ignoredUnknownField":1}"#,
        ),
        (
            "snake",
            r#"{"user_id":"ID","organization":{"org_id":"ORG"},"profile":{"given_name":"A","family_name":"B"},"email":{"email":"a@example.com","is_verified":true}}"#,
        ),
    ] {
        let id = unique(style);
        let org = unique("org");
        let body = body.replace("ID", &id).replace("ORG", &org);
        let (status, _, bytes) = h
            .rest_raw("POST", "/v2/users/human", &admin, Some(body.into_bytes()))
            .await;
        assert_eq!(status, 200, "{style}: {}", String::from_utf8_lossy(&bytes));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["userId"], id.as_str());
        assert_eq!(json["details"]["sequence"], "1", "uint64 as a JSON string");
        assert_eq!(json["details"]["resourceOwner"], org.as_str());
        let change_date = json["details"]["changeDate"].as_str().unwrap();
        assert!(change_date.ends_with('Z'), "{change_date}");
        let (status, _, bytes) = h
            .rest_raw("GET", &format!("/v2/users/{id}"), &admin, None)
            .await;
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["user"]["state"], "USER_STATE_ACTIVE");
        assert_eq!(json["user"]["human"]["email"]["isVerified"], true);
        // Snake-case code on verify too.
        let registered = h.register_totp(&admin, &id).await.unwrap();
        let body = format!(r#"{{"code":"{}"}}"#, h.code(&registered.secret, 0));
        let (status, _, _) = h
            .rest_raw(
                "POST",
                &format!("/v2/users/{id}/totp/verify"),
                &admin,
                Some(body.into_bytes()),
            )
            .await;
        assert_eq!(status, 200);
    }
}

pub async fn rest_path_user_id_wins_over_body(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let (other, _) = h.user_with_pending_totp().await;
    let body = format!(
        r#"{{"userId":"{}","code":"{}"}}"#,
        other.id,
        h.code(&secret, 0)
    );
    let (status, _, bytes) = h
        .rest_raw(
            "POST",
            &format!("/v2/users/{}/totp/verify", user.id),
            &h.admin(),
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let methods = h.list_methods(&h.admin(), &other.id).await.unwrap();
    assert!(
        methods.auth_method_types.is_empty(),
        "the body's user was left alone"
    );
}

pub async fn rest_refuses_malformed_json_and_wrong_content_types(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (user, _) = h.user_with_pending_totp().await;
    let path = format!("/v2/users/{}/totp/verify", user.id);
    for body in ["{", "[1,2]", r#"{"code": 123456}"#, "null x"] {
        let (status, headers, bytes) = h
            .rest_raw("POST", &path, &h.admin(), Some(body.as_bytes().to_vec()))
            .await;
        assert_eq!(status, 400, "{body}");
        let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
        assert_eq!(error.code, 3, "{body}: {error:?}");
        assert!(error.details.is_empty());
    }
    let (status, _, bytes) = h
        .rest_raw_typed(
            "POST",
            &path,
            &h.admin(),
            Some(("text/plain", b"{\"code\":\"123456\"}".to_vec())),
        )
        .await;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], 3);
}

pub async fn rest_answers_unknown_paths_and_wrong_methods_with_the_error_body(
    backend: Backend,
    protocol: Protocol,
) {
    let h = harness(backend, protocol).await;
    let (status, headers, bytes) = h
        .rest_raw("GET", "/v2/nothing/here", &h.admin(), None)
        .await;
    assert_eq!(status, 404);
    let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
    assert_eq!(error.code, 5);
    let (status, headers, bytes) = h
        .rest_raw("PUT", "/v2/users/someone/totp", &h.admin(), None)
        .await;
    assert_eq!(status, 405);
    let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
    assert_eq!(error.code, 12);
}

pub async fn rest_refuses_oversized_bodies(backend: Backend, protocol: Protocol) {
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let body = format!(
        r#"{{"code":"123456","padding":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, headers, bytes) = h
        .rest_raw(
            "POST",
            &format!("/v2/users/{}/totp/verify", user.id),
            &h.admin(),
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(status, 413);
    let error = crate::support::rest_error_for_tests(status, &headers, &bytes);
    assert_eq!(error.code, 3);
}

pub async fn grpc_calls_to_unknown_services_and_methods_are_unimplemented(
    backend: Backend,
    protocol: Protocol,
) {
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    let h = harness(backend, protocol).await;
    let mut grpc = tonic::client::Grpc::new(h.grpc_channel().await);
    for path in [
        "/no.such.Service/Call",
        "/zitadel.user.v2.UserService/NoSuchMethod",
    ] {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<HealthCheckRequest, HealthCheckResponse, _>(
                tonic::Request::new(HealthCheckRequest::default()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}");
    }
}

pub async fn connect_answers_protobuf_bodies(backend: Backend, protocol: Protocol) {
    use prost::Message;
    let h = harness(backend, protocol).await;
    let user = h.new_user().await;
    let request = user_pb::GetUserByIdRequest {
        user_id: user.id.clone(),
    };
    let (status, headers, bytes) = h
        .rest_raw_typed(
            "POST",
            "/zitadel.user.v2.UserService/GetUserByID",
            &h.admin(),
            Some(("application/proto", request.encode_to_vec())),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/proto");
    let shown = user_pb::GetUserByIdResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(shown.user.unwrap().user_id, user.id);

    let missing = user_pb::GetUserByIdRequest {
        user_id: unique("nobody"),
    };
    let (status, _, bytes) = h
        .rest_raw_typed(
            "POST",
            "/zitadel.user.v2.UserService/GetUserByID",
            &h.admin(),
            Some(("application/proto", missing.encode_to_vec())),
        )
        .await;
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["code"], "not_found");
    assert_eq!(error["message"], "User could not be found (COMMAND-M9dsd)");
}
