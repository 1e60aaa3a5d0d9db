//! The clients of the four protocols: one method per RPC on [`Harness`], sent as REST,
//! gRPC, gRPC-web or Connect as the harness's protocol says, and raw senders for malformed input.

use base64::Engine;
use http::uri::PathAndQuery;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

use super::*;

impl Harness {
    // ---- one method per RPC --------------------------------------------------------------

    pub async fn add_human_user(
        &self,
        auth: &Auth,
        request: user_pb::AddHumanUserRequest,
    ) -> Result<user_pb::AddHumanUserResponse, ApiError> {
        self.call(
            "zitadel.user.v2.UserService/AddHumanUser",
            "POST",
            "/v2/users/human".into(),
            auth,
            request,
            true,
        )
        .await
    }

    pub async fn register_totp(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::RegisterTotpResponse, ApiError> {
        let request = user_pb::RegisterTotpRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/RegisterTOTP",
            "POST",
            user_path(user_id, "/totp"),
            auth,
            request,
            true,
        )
        .await
    }

    pub async fn verify_totp(
        &self,
        auth: &Auth,
        user_id: &str,
        code: &str,
    ) -> Result<user_pb::VerifyTotpRegistrationResponse, ApiError> {
        let request = user_pb::VerifyTotpRegistrationRequest {
            user_id: user_id.into(),
            code: code.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/VerifyTOTPRegistration",
            "POST",
            user_path(user_id, "/totp/verify"),
            auth,
            request,
            true,
        )
        .await
    }

    pub async fn check_totp(
        &self,
        auth: &Auth,
        user_id: &str,
        code: &str,
    ) -> Result<totp_pb::CheckTotpResponse, ApiError> {
        let request = totp_pb::CheckTotpRequest {
            user_id: user_id.into(),
            code: code.into(),
        };
        self.call(
            "totpservice.v1.TOTPService/CheckTOTP",
            "POST",
            user_path(user_id, "/totp/check"),
            auth,
            request,
            true,
        )
        .await
    }

    pub async fn remove_totp(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::RemoveTotpResponse, ApiError> {
        let request = user_pb::RemoveTotpRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/RemoveTOTP",
            "DELETE",
            user_path(user_id, "/totp"),
            auth,
            request,
            false,
        )
        .await
    }

    pub async fn get_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::GetUserByIdResponse, ApiError> {
        let request = user_pb::GetUserByIdRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/GetUserByID",
            "GET",
            user_path(user_id, ""),
            auth,
            request,
            false,
        )
        .await
    }

    pub async fn delete_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::DeleteUserResponse, ApiError> {
        let request = user_pb::DeleteUserRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/DeleteUser",
            "DELETE",
            user_path(user_id, ""),
            auth,
            request,
            false,
        )
        .await
    }

    pub async fn lock_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::LockUserResponse, ApiError> {
        let request = user_pb::LockUserRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/LockUser",
            "POST",
            user_path(user_id, "/lock"),
            auth,
            request,
            true,
        )
        .await
    }

    pub async fn unlock_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::UnlockUserResponse, ApiError> {
        let request = user_pb::UnlockUserRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/UnlockUser",
            "POST",
            user_path(user_id, "/unlock"),
            auth,
            request,
            true,
        )
        .await
    }

    pub async fn list_methods(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::ListAuthenticationMethodTypesResponse, ApiError> {
        let request = user_pb::ListAuthenticationMethodTypesRequest {
            user_id: user_id.into(),
        };
        self.call(
            "zitadel.user.v2.UserService/ListAuthenticationMethodTypes",
            "GET",
            user_path(user_id, "/authentication_methods"),
            auth,
            request,
            false,
        )
        .await
    }

    // ---- the four protocols ----------------------------------------------------------------

    async fn call<Req, Resp>(
        &self,
        grpc_method: &str,
        http_method: &str,
        rest_path: String,
        auth: &Auth,
        request: Req,
        rest_body: bool,
    ) -> Result<Resp, ApiError>
    where
        Req: Message + Serialize + Send + Sync + 'static,
        Resp: Message + Default + DeserializeOwned + Send + Sync + 'static,
    {
        match self.protocol {
            Protocol::Rest => {
                let body = rest_body.then(|| serde_json::to_vec(&request).unwrap());
                let (status, headers, bytes) =
                    self.rest_raw(http_method, &rest_path, auth, body).await;
                if status == 200 {
                    assert_eq!(
                        headers.get("content-type").and_then(|v| v.to_str().ok()),
                        Some("application/json"),
                        "REST success content type"
                    );
                    Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                        panic!(
                            "REST body does not parse as the response: {e}: {}",
                            String::from_utf8_lossy(&bytes)
                        )
                    }))
                } else {
                    Err(rest_error(status, &headers, &bytes))
                }
            }
            Protocol::Grpc => self.grpc_call(grpc_method, auth, request).await,
            Protocol::Connect => {
                let body = serde_json::to_vec(&request).unwrap();
                let path = format!("/{grpc_method}");
                let (status, headers, bytes) = self
                    .rest_raw(http_method_for_connect(), &path, auth, Some(body))
                    .await;
                if status == 200 {
                    Ok(
                        serde_json::from_slice(&bytes)
                            .expect("Connect body parses as the response"),
                    )
                } else {
                    Err(connect_error(status, &headers, &bytes))
                }
            }
            Protocol::GrpcWeb => self.grpc_web_call(grpc_method, auth, request).await,
        }
    }

    /// Sends a raw REST request; returns status, headers and body.
    pub async fn rest_raw(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Vec<u8>>,
    ) -> (u16, http::HeaderMap, Vec<u8>) {
        self.rest_raw_typed(method, path, auth, body.map(|b| ("application/json", b)))
            .await
    }

    /// Like [`Self::rest_raw`] with an explicit content type.
    pub async fn rest_raw_typed(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, http::HeaderMap, Vec<u8>) {
        let url = format!("http://{}{}", self.addr, path);
        let mut builder = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(header) = auth.header() {
            builder = builder.header("authorization", header);
        }
        if let Some((content_type, body)) = body {
            builder = builder.header("content-type", content_type).body(body);
        }
        let response = builder.send().await.expect("REST request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("REST body").to_vec();
        (status, headers, bytes)
    }

    async fn grpc_call<Req, Resp>(
        &self,
        method: &str,
        auth: &Auth,
        request: Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let channel = self.channel.clone().expect("gRPC channel");
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.expect("gRPC ready");
        let mut request = tonic::Request::new(request);
        if let Some(header) = auth.header() {
            request
                .metadata_mut()
                .insert("authorization", header.parse().expect("ASCII header"));
        }
        let path = PathAndQuery::try_from(format!("/{method}")).unwrap();
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        client
            .unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ApiError {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: decode_status_details(status.details()),
                http_status: None,
                www_authenticate: None,
            })
    }

    /// Sends `message` as raw bytes on native gRPC (HTTP/2) to `/<method>`; the status code and
    /// message of the answer (0 when it succeeded).
    pub async fn grpc_raw(&self, method: &str, auth: &Auth, message: Vec<u8>) -> (i32, String) {
        let channel = self.grpc_channel().await;
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.expect("gRPC ready");
        let mut request = tonic::Request::new(message);
        if let Some(header) = auth.header() {
            request
                .metadata_mut()
                .insert("authorization", header.parse().expect("ASCII header"));
        }
        let Ok(path) = PathAndQuery::try_from(format!("/{method}")) else {
            return (-1, "not a path".into());
        };
        match client.unary(request, path, RawCodec).await {
            Ok(_) => (0, String::new()),
            Err(status) => (status.code() as i32, status.message().to_owned()),
        }
    }

    async fn grpc_web_call<Req, Resp>(
        &self,
        method: &str,
        auth: &Auth,
        request: Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let body = totp_client::grpc_web::frame(&request.encode_to_vec());
        let (status, headers, bytes) = self.grpc_web_raw(method, auth, body).await;
        assert_eq!(status, 200, "gRPC-web answers HTTP 200");
        let (messages, trailers) = totp_client::grpc_web::parse_body(&bytes);
        let field = |name: &str| totp_client::grpc_web::field(&headers, &trailers, name);
        let code: i32 = field("grpc-status").expect("grpc-status").parse().unwrap();
        if code == 0 {
            let first = messages.first().expect("a response message");
            return Ok(Resp::decode(first.as_slice()).expect("response decodes"));
        }
        let details = field("grpc-status-details-bin")
            .map(|b64| {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b64.trim_end_matches('='))
                    .expect("details are base64");
                decode_status_details(&bytes)
            })
            .unwrap_or_default();
        Err(ApiError {
            code,
            message: percent_decode(&field("grpc-message").unwrap_or_default()),
            details,
            http_status: None,
            www_authenticate: None,
        })
    }

    /// Sends a raw gRPC-web (binary) POST over HTTP/1.1.
    pub async fn grpc_web_raw(
        &self,
        method: &str,
        auth: &Auth,
        body: Vec<u8>,
    ) -> (u16, http::HeaderMap, Vec<u8>) {
        let url = format!("http://{}/{}", self.addr, method);
        let mut builder = self
            .http
            .post(url)
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(body);
        if let Some(header) = auth.header() {
            builder = builder.header("authorization", header);
        }
        let response = builder.send().await.expect("gRPC-web request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("gRPC-web body").to_vec();
        (status, headers, bytes)
    }
}

/// `/v2/users/<id><suffix>`, with the id percent-encoded.
fn user_path(user_id: &str, suffix: &str) -> String {
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

/// A gRPC codec that sends and receives message bytes as they are (for malformed messages).
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}
