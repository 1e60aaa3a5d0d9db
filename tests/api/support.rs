//! The test harness: starts the real server on port 0 against SQLite or Postgres, and talks to it
//! with real clients over REST (HTTP/1.1 JSON), gRPC (tonic over h2c) and gRPC-web (HTTP/1.1).
//! Every call returns the response message or an [`ApiError`] with what the wire said.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::uri::PathAndQuery;
use prost::Message;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use totp_service::app;
use totp_service::config::{Config, LogFormat};
use totp_service::domain::clock::{Clock, ManualClock, SystemClock, Timestamp};
use totp_service::domain::totp::{self, Algorithm, Secret};
use totp_service::proto::google::rpc::Status as RpcStatus;
use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::object::v2 as object_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;
use totp_service::proto::zitadel::v1::ErrorDetail;
use totp_service::transport::auth::{LocalSigningKey, TokenRules, token_claims};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "totp-service-tests";
pub const OTP_ISSUER: &str = "ACME Corp";
pub const ROLES_CLAIM: &str = "urn:zitadel:iam:org:project:roles";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// Postgres with the user cache off: every command on a user goes to the group-commit
    /// writer, which reads the user, decides and writes in one cycle.
    PostgresUncached,
}

impl Backend {
    pub fn is_postgres(self) -> bool {
        matches!(self, Backend::Postgres | Backend::PostgresUncached)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
    /// Connect unary calls with JSON bodies on the gRPC paths.
    Connect,
}

/// How a harness is set up.
#[derive(Clone, Debug)]
pub struct Options {
    pub backend: Backend,
    pub protocol: Protocol,
    /// Use the wall clock instead of a pinned one.
    pub system_clock: bool,
    pub max_attempts: u32,
    pub lockout: Duration,
    /// `TOTP_ENCRYPTION_KEYS`; `None` uses the key file in the data folder.
    pub encryption_keys: Option<String>,
    /// `TOTP_JWKS`; `None` trusts the local signing key.
    pub jwks: Option<String>,
    pub request_timeout: Duration,
    /// `TOTP_HEADER_READ_TIMEOUT` and `TOTP_BODY_READ_TIMEOUT`.
    pub read_timeout: Duration,
    /// `TOTP_DB_QUEUE_CAPACITY`.
    pub db_queue_capacity: usize,
    /// `TOTP_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl Options {
    pub fn new(backend: Backend, protocol: Protocol) -> Self {
        Options {
            backend,
            protocol,
            system_clock: false,
            max_attempts: 5,
            lockout: Duration::from_secs(300),
            encryption_keys: None,
            jwks: None,
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            db_queue_capacity: 4096,
            max_connections: 1024,
        }
    }
}

/// What a failed call showed on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: i32,
    pub message: String,
    /// `(id, message)` of each ErrorDetail.
    pub details: Vec<(String, String)>,
    /// REST only: the HTTP status.
    pub http_status: Option<u16>,
    /// REST only: the `WWW-Authenticate` header.
    pub www_authenticate: Option<String>,
}

impl ApiError {
    /// Asserts code, id and English message of an expected refusal (with exactly one detail).
    #[track_caller]
    pub fn assert_rejected(&self, code: i32, id: &str, message: &str) {
        assert_eq!(self.code, code, "code of {self:?}");
        assert_eq!(
            self.message,
            format!("{message} ({id})"),
            "message of {self:?}"
        );
        assert_eq!(
            self.details,
            vec![(id.to_owned(), message.to_owned())],
            "details of {self:?}"
        );
        if let Some(status) = self.http_status {
            assert_eq!(status, http_status_of(code), "HTTP status of {self:?}");
        }
    }

    /// Asserts a validation failure: code 3, the message, no detail.
    #[track_caller]
    pub fn assert_validation(&self, message: &str) {
        assert_eq!(self.code, 3, "code of {self:?}");
        assert_eq!(self.message, message, "message of {self:?}");
        assert!(self.details.is_empty(), "details of {self:?}");
        if let Some(status) = self.http_status {
            assert_eq!(status, 400, "HTTP status of {self:?}");
        }
    }
}

/// SPEC.md §4's mapping, restated independently of the server's code.
pub fn http_status_of(code: i32) -> u16 {
    match code {
        3 | 9 => 400,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        4 => 504,
        12 => 405,
        13 => 500,
        14 => 503,
        16 => 401,
        other => panic!("no HTTP status for code {other}"),
    }
}

/// The `Authorization` header to send (or none).
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Header(String),
}

impl Auth {
    pub fn bearer(token: &str) -> Self {
        Auth::Header(format!("Bearer {token}"))
    }

    pub fn header(&self) -> Option<&str> {
        match self {
            Auth::None => None,
            Auth::Header(value) => Some(value),
        }
    }
}

/// A user made for a test, in its own organisation.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub org: String,
    pub email: String,
}

/// A running server and a client of one protocol.
pub struct Harness {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub clock: Arc<ManualClock>,
    pub system_clock: bool,
    key: LocalSigningKey,
    http: reqwest::Client,
    channel: Option<tonic::transport::Channel>,
    data_dir: Arc<tempfile::TempDir>,
}

/// A random lowercase id with a prefix, unique across tests sharing one Postgres.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// The middle of the current 30-second step, so that ±1 step codes stay valid during a test.
fn middle_of_current_step() -> Timestamp {
    let now = SystemClock.now().unix_seconds();
    Timestamp((totp::step_at(now, totp::PERIOD) * 30 + 15) * 1_000_000)
}

pub fn config_for(options: &Options, data_dir: &std::path::Path) -> Config {
    let database_url = match options.backend {
        Backend::Sqlite => None,
        Backend::Postgres | Backend::PostgresUncached => Some(std::env::var("DATABASE_URL").expect(
            "Postgres tests need DATABASE_URL; run scripts/test.sh, which starts a throwaway cluster",
        )),
    };
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url,
        data_dir: data_dir.to_owned(),
        jwks: options.jwks.clone(),
        token_issuer: ISSUER.to_owned(),
        token_audience: Some(AUDIENCE.to_owned()),
        token_any_audience: false,
        roles_claim: ROLES_CLAIM.to_owned(),
        otp_issuer: OTP_ISSUER.to_owned(),
        encryption_keys: options.encryption_keys.clone(),
        max_attempts: options.max_attempts,
        lockout_duration: options.lockout,
        request_timeout: options.request_timeout,
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(5),
        db_wait: Duration::from_secs(5),
        header_read_timeout: options.read_timeout,
        body_read_timeout: options.read_timeout,
        max_connections: options.max_connections,
        db_queue_capacity: options.db_queue_capacity,
        cors_origins: vec![],
        log_format: LogFormat::Pretty,
        db_max_connections: Some(4),
        user_cache_size: match options.backend {
            Backend::PostgresUncached => 0,
            Backend::Sqlite | Backend::Postgres => 1024,
        },
    }
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        Self::start_in(options, Arc::new(tempfile::tempdir().expect("temp dir"))).await
    }

    /// A second instance beside this one: the same data folder (so the same SQLite file, signing
    /// key and key file) and, for Postgres, the same database.
    pub async fn start_beside(&self, options: Options) -> Harness {
        Self::start_in(options, self.data_dir.clone()).await
    }

    /// The configuration this harness would use with `options`.
    pub fn config(&self, options: &Options) -> Config {
        config_for(options, self.data_dir.path())
    }

    async fn start_in(options: Options, data_dir: Arc<tempfile::TempDir>) -> Harness {
        let config = config_for(&options, data_dir.path());
        let clock = Arc::new(ManualClock::new(middle_of_current_step()));
        let service_clock: Arc<dyn Clock> = if options.system_clock {
            Arc::new(SystemClock)
        } else {
            clock.clone()
        };
        let app = app::build(&config, service_clock)
            .await
            .expect("app builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(app.serve(listener, pending()));
        let channel = match options.protocol {
            Protocol::Grpc => Some(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .expect("gRPC connects"),
            ),
            _ => None,
        };
        Harness {
            addr,
            protocol: options.protocol,
            clock,
            system_clock: options.system_clock,
            key: LocalSigningKey::load_or_create(data_dir.path()).expect("local key"),
            http: reqwest::Client::builder().http1_only().build().unwrap(),
            channel,
            data_dir,
        }
    }

    /// The time the service sees.
    pub fn now(&self) -> Timestamp {
        if self.system_clock {
            SystemClock.now()
        } else {
            self.clock.now()
        }
    }

    /// The code of `secret` for the step `offset` steps from the service's current one.
    pub fn code(&self, secret_base32: &str, offset: i64) -> String {
        let secret = Secret::from_base32(secret_base32).expect("base32 secret");
        let step = totp::step_at(self.now().unix_seconds(), totp::PERIOD) + offset;
        totp::code_for_step(&secret, step, totp::DIGITS, Algorithm::Sha1)
    }

    /// Moves the pinned clock forward by whole steps.
    pub fn advance_steps(&self, steps: u64) {
        self.clock.advance(Duration::from_secs(30 * steps));
    }

    /// A gRPC channel to the server (any protocol's harness).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("gRPC connects")
    }

    pub fn rules(&self) -> TokenRules {
        TokenRules {
            issuer: ISSUER.to_owned(),
            audience: Some(AUDIENCE.to_owned()),
            roles_claim: ROLES_CLAIM.to_owned(),
        }
    }

    /// A valid token for `subject` holding each `(permission, org)`.
    pub fn token(&self, subject: &str, grants: &[(&str, &str)]) -> Auth {
        self.token_with(&self.rules(), subject, grants, None, |_| {})
    }

    /// A token built from `rules`, with `edit` applied to its claims before signing.
    pub fn token_with(
        &self,
        rules: &TokenRules,
        subject: &str,
        grants: &[(&str, &str)],
        resource_owner: Option<&str>,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Auth {
        let grants: Vec<(String, String)> = grants
            .iter()
            .map(|(p, o)| ((*p).to_owned(), (*o).to_owned()))
            .collect();
        let mut claims = token_claims(
            rules,
            subject,
            &grants,
            resource_owner,
            Duration::from_secs(600),
        );
        edit(&mut claims);
        Auth::bearer(&self.key.sign(&claims).expect("sign"))
    }

    /// A token with every permission in every organisation.
    pub fn admin(&self) -> Auth {
        self.token(
            "admin",
            &[
                ("user.write", "*"),
                ("user.read", "*"),
                ("user.credential.write", "*"),
                ("session.write", "*"),
            ],
        )
    }

    /// Adds a user in a fresh organisation.
    pub async fn new_user(&self) -> TestUser {
        let user = TestUser {
            id: unique("user"),
            org: unique("org"),
            email: format!("{}@example.com", unique("mail")),
        };
        self.add_human_user(&self.admin(), human_request(&user))
            .await
            .expect("user added");
        user
    }

    /// Adds a user and registers a TOTP; returns the secret.
    pub async fn user_with_pending_totp(&self) -> (TestUser, String) {
        let user = self.new_user().await;
        let registered = self
            .register_totp(&self.admin(), &user.id)
            .await
            .expect("registered");
        (user, registered.secret)
    }

    /// Adds a user with a verified TOTP; returns the secret.
    pub async fn user_with_ready_totp(&self) -> (TestUser, String) {
        let (user, secret) = self.user_with_pending_totp().await;
        self.verify_totp(&self.admin(), &user.id, &self.code(&secret, 0))
            .await
            .expect("verified");
        (user, secret)
    }

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

    // ---- the three protocols ---------------------------------------------------------------

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
        let body = totp_service::grpc_web::frame(&request.encode_to_vec());
        let (status, headers, bytes) = self.grpc_web_raw(method, auth, body).await;
        assert_eq!(status, 200, "gRPC-web answers HTTP 200");
        let (messages, trailers) = totp_service::grpc_web::parse_body(&bytes);
        let field = |name: &str| {
            trailers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
        };
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

/// An AddHumanUser request for `user` in its organisation.
pub fn human_request(user: &TestUser) -> user_pb::AddHumanUserRequest {
    user_pb::AddHumanUserRequest {
        user_id: Some(user.id.clone()),
        username: None,
        organization: Some(object_pb::Organization {
            org: Some(object_pb::organization::Org::OrgId(user.org.clone())),
        }),
        profile: Some(user_pb::SetHumanProfile {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            ..Default::default()
        }),
        email: Some(user_pb::SetHumanEmail {
            email: user.email.clone(),
            verification: None,
        }),
        totp_secret: None,
    }
}

/// The REST error body of a raw response, checked for shape.
pub fn rest_error_for_tests(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    rest_error(status, headers, bytes)
}

fn rest_error(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|_| {
        panic!(
            "REST error body is JSON: {}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "REST error content type"
    );
    let details = body["details"]
        .as_array()
        .expect("details is an array")
        .iter()
        .map(|d| {
            assert_eq!(d["@type"], "type.googleapis.com/zitadel.v1.ErrorDetail");
            (
                d["id"].as_str().unwrap().to_owned(),
                d["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ApiError {
        code: body["code"].as_i64().expect("code is a number") as i32,
        message: body["message"].as_str().expect("message").to_owned(),
        details,
        http_status: Some(status),
        www_authenticate: headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

fn http_method_for_connect() -> &'static str {
    "POST"
}

/// Connect's error JSON, with its code name checked against its HTTP status.
fn connect_error(status: u16, headers: &http::HeaderMap, bytes: &[u8]) -> ApiError {
    assert_eq!(
        headers["content-type"], "application/json",
        "Connect error content type"
    );
    let body: serde_json::Value = serde_json::from_slice(bytes).expect("Connect error JSON");
    let (code, expected_status) = match body["code"].as_str().expect("code is a name") {
        "invalid_argument" => (3, 400),
        "deadline_exceeded" => (4, 504),
        "not_found" => (5, 404),
        "already_exists" => (6, 409),
        "permission_denied" => (7, 403),
        "resource_exhausted" => (8, 429),
        "failed_precondition" => (9, 400),
        "unimplemented" => (12, 501),
        "internal" => (13, 500),
        "unavailable" => (14, 503),
        "unauthenticated" => (16, 401),
        other => panic!("unknown Connect code {other}"),
    };
    assert_eq!(
        status, expected_status,
        "HTTP status of Connect code {}",
        body["code"]
    );
    let details = body["details"]
        .as_array()
        .expect("details array")
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "zitadel.v1.ErrorDetail");
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(d["value"].as_str().unwrap().trim_end_matches('='))
                .expect("value is base64");
            let detail = ErrorDetail::decode(bytes.as_slice()).expect("ErrorDetail decodes");
            (detail.id, detail.message)
        })
        .collect();
    ApiError {
        code,
        message: body["message"].as_str().unwrap().to_owned(),
        details,
        http_status: None,
        www_authenticate: None,
    }
}

fn decode_status_details(bytes: &[u8]) -> Vec<(String, String)> {
    if bytes.is_empty() {
        return vec![];
    }
    let status = RpcStatus::decode(bytes).expect("grpc-status-details-bin is a google.rpc.Status");
    status
        .details
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, "type.googleapis.com/zitadel.v1.ErrorDetail");
            let detail = ErrorDetail::decode(any.value.as_ref()).expect("ErrorDetail decodes");
            (detail.id, detail.message)
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 grpc-message")
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
