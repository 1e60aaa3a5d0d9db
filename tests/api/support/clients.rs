//! The harness's clients: one method per RPC on [`Harness`], sent on the harness's protocol by
//! the shared client of `totp-client` (which checks the wire contract of every answer), and raw
//! senders for malformed input.

use http::uri::PathAndQuery;

use totp_client::calls::{CallError, Rpc};
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
        self.call(auth, request).await
    }

    pub async fn register_totp(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::RegisterTotpResponse, ApiError> {
        self.call(
            auth,
            user_pb::RegisterTotpRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    pub async fn verify_totp(
        &self,
        auth: &Auth,
        user_id: &str,
        code: &str,
    ) -> Result<user_pb::VerifyTotpRegistrationResponse, ApiError> {
        self.call(
            auth,
            user_pb::VerifyTotpRegistrationRequest {
                user_id: user_id.into(),
                code: code.into(),
            },
        )
        .await
    }

    pub async fn check_totp(
        &self,
        auth: &Auth,
        user_id: &str,
        code: &str,
    ) -> Result<totp_pb::CheckTotpResponse, ApiError> {
        self.call(
            auth,
            totp_pb::CheckTotpRequest {
                user_id: user_id.into(),
                code: code.into(),
            },
        )
        .await
    }

    pub async fn remove_totp(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::RemoveTotpResponse, ApiError> {
        self.call(
            auth,
            user_pb::RemoveTotpRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    pub async fn get_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::GetUserByIdResponse, ApiError> {
        self.call(
            auth,
            user_pb::GetUserByIdRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    pub async fn delete_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::DeleteUserResponse, ApiError> {
        self.call(
            auth,
            user_pb::DeleteUserRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    pub async fn lock_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::LockUserResponse, ApiError> {
        self.call(
            auth,
            user_pb::LockUserRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    pub async fn unlock_user(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::UnlockUserResponse, ApiError> {
        self.call(
            auth,
            user_pb::UnlockUserRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    pub async fn list_methods(
        &self,
        auth: &Auth,
        user_id: &str,
    ) -> Result<user_pb::ListAuthenticationMethodTypesResponse, ApiError> {
        self.call(
            auth,
            user_pb::ListAuthenticationMethodTypesRequest {
                user_id: user_id.into(),
            },
        )
        .await
    }

    /// Sends `request` on the harness's protocol; a refusal is returned, an answer that breaks
    /// the wire contract or a lost connection fails the test.
    pub async fn call<R: Rpc>(&self, auth: &Auth, request: R) -> Result<R::Response, ApiError> {
        match self.client.call(auth.header(), request).await {
            Ok(response) => Ok(response),
            Err(CallError::Refused(refusal)) => Err(refusal),
            Err(CallError::Contract(breach)) => {
                panic!("{} broke the wire contract: {breach}", R::METHOD)
            }
            Err(CallError::Transport(error)) => panic!("{} got no answer: {error}", R::METHOD),
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
