//! The test harness: starts the real server on port 0 against SQLite or Postgres, and talks to it
//! with the shared client of `totp-client` over REST (HTTP/1.1 JSON), gRPC (tonic on an HTTP/2
//! connection), gRPC-web (HTTP/1.1) and Connect (JSON).
//! Every call returns the response message or an [`ApiError`] with what the wire said.

mod clients;
mod decoders;

pub use decoders::*;

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpListener;

use clap::Parser;
use totp_service::app;
use totp_service::config::{Cli, Config, LogFormat};
use totp_service::domain::clock::{Clock, ManualClock, SystemClock, Timestamp};
use totp_service::domain::totp::{self, Algorithm, Secret};
use totp_service::proto::zitadel::object::v2 as object_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;
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

pub use totp_client::calls::Protocol;

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
pub type ApiError = totp_client::calls::Refusal;

/// The assertions of the tests on a refusal.
pub trait Refused {
    fn assert_rejected(&self, code: i32, id: &str, message: &str);
    fn assert_validation(&self, message: &str);
}

impl Refused for ApiError {
    /// Asserts code, id and English message of an expected refusal (with exactly one detail).
    #[track_caller]
    fn assert_rejected(&self, code: i32, id: &str, message: &str) {
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
    fn assert_validation(&self, message: &str) {
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
    pub clock: Arc<ManualClock>,
    pub system_clock: bool,
    key: LocalSigningKey,
    http: reqwest::Client,
    /// The client of the harness's protocol.
    client: totp_client::calls::Client,
    data_dir: Arc<tempfile::TempDir>,
    /// The test's own Postgres database (`None` on SQLite).
    database_url: Option<String>,
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

/// The configuration of a test server: the service's defaults (as `totp-service` with no flags
/// gives them), with the settings the tests rely on set explicitly. `database_url` is the test's
/// own Postgres database (see [`fresh_database`]), or `None` for SQLite in `data_dir`.
pub fn config_for(
    options: &Options,
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> Config {
    let mut config = Cli::parse_from(["totp-service"]).config;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = database_url.map(str::to_owned);
    config.data_dir = data_dir.to_owned();
    config.jwks = options.jwks.clone();
    config.token_issuer = ISSUER.to_owned();
    config.token_audience = Some(AUDIENCE.to_owned());
    config.token_any_audience = false;
    config.roles_claim = ROLES_CLAIM.to_owned();
    config.otp_issuer = OTP_ISSUER.to_owned();
    config.encryption_keys = options.encryption_keys.clone();
    config.max_attempts = options.max_attempts;
    config.lockout_duration = options.lockout;
    config.request_timeout = options.request_timeout;
    config.drain_delay = Duration::ZERO;
    config.shutdown_grace = Duration::from_secs(5);
    config.db_wait = Duration::from_secs(5);
    config.header_read_timeout = options.read_timeout;
    config.body_read_timeout = options.read_timeout;
    config.max_connections = options.max_connections;
    config.db_queue_capacity = options.db_queue_capacity;
    config.cors_origins = vec![];
    config.log_format = LogFormat::Pretty;
    config.db_max_connections = Some(4);
    config.user_cache_size = match options.backend {
        Backend::PostgresUncached => 0,
        Backend::Sqlite | Backend::Postgres => 1024,
    };
    config
}

/// The Postgres server of the tests (`DATABASE_URL`, which `scripts/test.sh` provides).
fn postgres_server() -> url::Url {
    let url = std::env::var("DATABASE_URL").expect(
        "Postgres tests need DATABASE_URL; run scripts/test.sh, which starts a throwaway cluster",
    );
    url::Url::parse(&url).expect("DATABASE_URL is a URL")
}

/// `server` with another database name.
fn with_database(server: &url::Url, name: &str) -> String {
    let mut url = server.clone();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A new database of its own for one test, copied from a migrated template (made once per test
/// process): tests on Postgres do not see each other's rows, as tests on SQLite have files of
/// their own.
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let server = postgres_server();
    let template = TEMPLATE
        .get_or_init(|| async {
            let name = format!("totp_template_{}", unique("t").replace('-', "_"));
            let mut admin = sqlx::PgConnection::connect(server.as_str()).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let mut template = sqlx::PgConnection::connect(&with_database(&server, &name))
                .await
                .unwrap();
            sqlx::migrate!("./migrations/postgres")
                .run(&mut template)
                .await
                .unwrap();
            template.close().await.unwrap();
            name
        })
        .await;
    let name = unique("totp_test").replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(server.as_str()).await.unwrap();
    sqlx::query(&format!(
        "CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    with_database(&server, &name)
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        let database_url = match options.backend {
            Backend::Sqlite => None,
            Backend::Postgres | Backend::PostgresUncached => Some(fresh_database().await),
        };
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(options, data_dir, database_url).await
    }

    /// A second instance beside this one: the same data folder (so the same SQLite file, signing
    /// key and key file) and, for Postgres, the same database.
    pub async fn start_beside(&self, options: Options) -> Harness {
        Self::start_in(options, self.data_dir.clone(), self.database_url.clone()).await
    }

    /// The configuration this harness would use with `options`.
    pub fn config(&self, options: &Options) -> Config {
        config_for(options, self.data_dir.path(), self.database_url.as_deref())
    }

    /// The test's own Postgres database (`None` on SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    async fn start_in(
        options: Options,
        data_dir: Arc<tempfile::TempDir>,
        database_url: Option<String>,
    ) -> Harness {
        let config = config_for(&options, data_dir.path(), database_url.as_deref());
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
        let http = reqwest::Client::builder().http1_only().build().unwrap();
        let base = format!("http://{addr}");
        let client = totp_client::calls::Client::connect(options.protocol, &base, 1)
            .await
            .expect("a client of the server");
        Harness {
            addr,
            clock,
            system_clock: options.system_clock,
            key: LocalSigningKey::load_or_create(data_dir.path()).expect("local key"),
            http,
            client,
            data_dir,
            database_url,
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
