//! The one typed configuration: flags, each also read from its environment variable
//! (SPEC.md §6). `Debug` redacts the encryption keys and the database password.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// TOTP second factors as a service, speaking ZITADEL's user service v2 API over REST, gRPC and
/// gRPC-web on one port.
#[derive(Parser)]
#[command(
    name = "totp-service",
    version,
    about,
    after_help = "Logging: RUST_LOG sets which log lines are written (default `info`; e.g. \
                  `warn`, `totp_service=debug,info`); TOTP_LOG_FORMAT sets their format."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print a token signed with the local key (the embedded default, no TOTP_JWKS).
    Token(TokenArgs),
    /// Re-seal every TOTP secret under the first key of TOTP_ENCRYPTION_KEYS (safe while the
    /// service runs, safe to interrupt and to run again).
    Rekey,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Exit 0 when the service on TOTP_LISTEN is ready (`/readyz`), else 1 (for HEALTHCHECK).
    Healthcheck,
    /// Print the current code of a base32 secret (for trying the API without a phone).
    Code {
        /// The base32 secret, as RegisterTOTP returns it.
        #[arg(long)]
        secret: String,
    },
}

#[derive(Args)]
pub struct TokenArgs {
    /// The caller's user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// A permission in an organisation, `permission@org` (`@*` for every organisation); repeatable.
    #[arg(long = "grant", value_name = "PERMISSION@ORG")]
    pub grants: Vec<String>,
    /// The caller's own organisation (claim `urn:zitadel:iam:user:resourceowner:id`).
    #[arg(long)]
    pub org: Option<String>,
    /// How long the token is valid (`3600s`, `60m`, `12h`).
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Args, Clone)]
pub struct Config {
    /// Address to listen on (REST, gRPC and gRPC-web share it).
    #[arg(
        long,
        env = "TOTP_LISTEN",
        default_value = "0.0.0.0:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// `postgres://…` for Postgres; unset, SQLite in the data folder.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Folder for the embedded defaults: SQLite database, local signing key, encryption key.
    #[arg(long, env = "TOTP_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// JWKS to trust for bearer tokens: a file path or an http(s) URL (refreshed every 5 minutes).
    /// Unset, the service makes a local signing key in the data folder and trusts only that.
    #[arg(long, env = "TOTP_JWKS", global = true)]
    pub jwks: Option<String>,

    /// Required `iss` of tokens.
    #[arg(
        long,
        env = "TOTP_TOKEN_ISSUER",
        default_value = "totp-service",
        global = true
    )]
    pub token_issuer: String,

    /// Required `aud` of tokens: a token whose `aud` does not name it is refused. Must be set
    /// with an external TOTP_JWKS (see TOTP_TOKEN_ANY_AUDIENCE).
    #[arg(long, env = "TOTP_TOKEN_AUDIENCE", global = true)]
    pub token_audience: Option<String>,

    /// Accept tokens of any audience with an external TOTP_JWKS (then any application of the
    /// issuer can call this service with its tokens; a warning is logged at start).
    #[arg(long, env = "TOTP_TOKEN_ANY_AUDIENCE", global = true)]
    pub token_any_audience: bool,

    /// Claim holding the caller's permissions, shaped as ZITADEL's project roles.
    #[arg(
        long,
        env = "TOTP_ROLES_CLAIM",
        default_value = "urn:zitadel:iam:org:project:roles",
        global = true
    )]
    pub roles_claim: String,

    /// Issuer shown in authenticator apps (the otpauth URI).
    #[arg(
        long,
        env = "TOTP_OTP_ISSUER",
        default_value = "totp-service",
        global = true
    )]
    pub otp_issuer: String,

    /// AES-256-GCM keys sealing TOTP secrets, `id:base64,id:base64`; the first seals, all open.
    /// Unset, a key is made in the data folder.
    #[arg(
        long,
        env = "TOTP_ENCRYPTION_KEYS",
        hide_env_values = true,
        global = true
    )]
    pub encryption_keys: Option<String>,

    /// Wrong codes before a user is locked; 0 turns lockout off.
    #[arg(long, env = "TOTP_MAX_ATTEMPTS", default_value_t = 5, global = true)]
    pub max_attempts: u32,

    /// Most recovery codes a user may hold unused (GenerateRecoveryCodes asks for 1 up to this many).
    #[arg(long, env = "TOTP_RECOVERY_CODES_MAX", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub recovery_codes_max: u32,

    /// How long a lockout lasts (`300s`, `5m`); 0 means until UnlockUser.
    #[arg(long, env = "TOTP_LOCKOUT_DURATION", default_value = "5m", value_parser = parse_duration, global = true)]
    pub lockout_duration: Duration,

    /// Longest a request may take before it is abandoned with code 4 (DEADLINE_EXCEEDED).
    #[arg(long, env = "TOTP_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub request_timeout: Duration,

    /// After SIGTERM/SIGINT, how long to keep serving with `/readyz` at 503 before refusing new
    /// connections, so load balancers see the service leave before it stops answering.
    #[arg(long, env = "TOTP_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration, global = true)]
    pub drain_delay: Duration,

    /// How long to finish in-flight requests after SIGTERM/SIGINT before closing them.
    #[arg(long, env = "TOTP_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration, global = true)]
    pub shutdown_grace: Duration,

    /// How long to wait at start-up for the database to answer.
    #[arg(long, env = "TOTP_DB_WAIT", default_value = "30s", value_parser = parse_duration, global = true)]
    pub db_wait: Duration,

    /// Longest a client may take to send a request's headers before its connection is closed.
    #[arg(long, env = "TOTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub header_read_timeout: Duration,

    /// Longest a client may take to send a request's body before the request is refused.
    #[arg(long, env = "TOTP_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub body_read_timeout: Duration,

    /// Most client connections open at once; further clients wait in the listen backlog.
    #[arg(
        long,
        env = "TOTP_MAX_CONNECTIONS",
        default_value_t = 1024,
        global = true
    )]
    pub max_connections: usize,

    /// Most database operations waiting for the database at once; beyond it a request is
    /// answered at once with code 8 (RESOURCE_EXHAUSTED, HTTP 429).
    #[arg(
        long,
        env = "TOTP_DB_QUEUE_CAPACITY",
        default_value_t = 4096,
        global = true
    )]
    pub db_queue_capacity: usize,

    /// Browser origins allowed by CORS (comma list; `*` for any).
    #[arg(long, env = "TOTP_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,

    /// Log format.
    #[arg(
        long,
        env = "TOTP_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,

    /// Most database connections in the pool [default: 16 on Postgres, 8 on SQLite]
    #[arg(long, env = "TOTP_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,

    /// Users whose last known state is kept in memory, so that a command on a user seen recently
    /// skips a database read (every write still checks the database's version); 0 turns it off
    #[arg(
        long,
        env = "TOTP_USER_CACHE_SIZE",
        default_value_t = 1024,
        global = true
    )]
    pub user_cache_size: usize,
}

impl Config {
    /// The database URL in use: `DATABASE_URL`, else SQLite in the data folder.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.sqlite_path().display()),
        }
    }

    /// The embedded database's file in the data folder (used without `DATABASE_URL`).
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("totp.db")
    }
}

/// Query parameters whose values are secrets (libpq's and sqlx's names for a password).
const SECRET_QUERY_KEYS: [&str; 3] = ["password", "sslpassword", "passfile"];

/// `url` with its password, and any password-like query parameter, replaced by `***`; text
/// that is not a URL is hidden whole (it might be a password-bearing connection string).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<not a URL, hidden>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let secret = SECRET_QUERY_KEYS
                    .iter()
                    .any(|s| key.eq_ignore_ascii_case(s));
                let value = if secret {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // `***` is percent-encoded by the URL writer; show it as written.
    parsed.to_string().replace("%2A%2A%2A", "***")
}

/// A JWKS setting as shown in logs and `config`: a path as is; a URL without its userinfo and
/// query (either may hold a credential of the identity provider).
pub fn redact_jwks(spec: &str) -> String {
    match url::Url::parse(spec) {
        Ok(mut url) if url.scheme() == "http" || url.scheme() == "https" => {
            let had_secret = !url.username().is_empty() || url.password().is_some();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let had_query = url.query().is_some();
            url.set_query(None);
            let mut shown = url.to_string();
            if had_query {
                shown.push_str("?***");
            }
            if had_secret {
                shown = shown.replacen("://", "://***@", 1);
            }
            shown
        }
        _ => spec.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .field("jwks", &self.jwks.as_deref().map(redact_jwks))
            .field("token_issuer", &self.token_issuer)
            .field("token_audience", &self.token_audience)
            .field("token_any_audience", &self.token_any_audience)
            .field("roles_claim", &self.roles_claim)
            .field("otp_issuer", &self.otp_issuer)
            .field(
                "encryption_keys",
                &self.encryption_keys.as_ref().map(|_| "<redacted>"),
            )
            .field("max_attempts", &self.max_attempts)
            .field("recovery_codes_max", &self.recovery_codes_max)
            .field("lockout_duration", &self.lockout_duration)
            .field("request_timeout", &self.request_timeout)
            .field("drain_delay", &self.drain_delay)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("db_wait", &self.db_wait)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("db_queue_capacity", &self.db_queue_capacity)
            .field("cors_origins", &self.cors_origins)
            .field("log_format", &self.log_format)
            .field("db_max_connections", &self.db_max_connections)
            .field("user_cache_size", &self.user_cache_size)
            .finish()
    }
}

/// Parses `0`, `300`, `300s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 300s, 5m or 0"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_duration_forms_of_the_spec() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("five").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn debug_hides_keys_and_database_password() {
        let cli = Cli::parse_from([
            "totp-service",
            "--database-url",
            "postgres://app:hunter2@db/totp",
            "--encryption-keys",
            "k1:c2VjcmV0",
        ]);
        let printed = format!("{:?}", cli.config);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("c2VjcmV0"), "{printed}");
        assert!(printed.contains("postgres://app:***@db/totp"), "{printed}");
    }

    #[test]
    fn passwords_are_redacted_in_every_form() {
        for (url, shown) in [
            (
                "postgres://app:hunter2@db/totp",
                "postgres://app:***@db/totp",
            ),
            (
                "postgres://app:hun%40ter2@db:5432/totp",
                "postgres://app:***@db:5432/totp",
            ),
            (
                "postgres://app:p@ss@word@db/totp",
                "postgres://app:***@db/totp",
            ),
            (
                "postgres://db/totp?user=app&password=hunter2&sslmode=require",
                "postgres://db/totp?user=app&password=***&sslmode=require",
            ),
            ("postgres://app@db/totp", "postgres://app@db/totp"),
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains("hunter2") && !redacted.contains("ter2"));
        }
        assert_eq!(
            redact_url("host=db password=hunter2"),
            "<not a URL, hidden>"
        );
        assert_eq!(
            redact_jwks("https://client:s3cret@idp.example/keys?token=s3cret"),
            "https://***@idp.example/keys?***"
        );
        assert_eq!(
            redact_jwks("https://idp.example/keys"),
            "https://idp.example/keys"
        );
        assert_eq!(redact_jwks("/etc/jwks.json"), "/etc/jwks.json");
    }
}
