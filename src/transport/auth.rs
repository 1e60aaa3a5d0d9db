//! Bearer-token authentication, one function for every protocol (SPEC.md §5): the header must be
//! `Bearer <JWT>`, signed by a key of the JWKS (file or URL, refreshed), with the configured issuer
//! and audience, within its time window (60 s leeway). The caller is `sub`; its permissions come
//! from the roles claim, shaped as ZITADEL's project roles: `{"<permission>": {"<org>": …}}`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::domain::error::{AuthFailure, Error};
use crate::domain::types::Caller;

/// The claim that names the caller's own organisation.
pub const RESOURCE_OWNER_CLAIM: &str = "urn:zitadel:iam:user:resourceowner:id";
/// Key id of the locally made signing key.
pub const LOCAL_KEY_ID: &str = "local";
const LOCAL_KEY_FILE: &str = "signing-key.pem";
const LOCAL_JWKS_FILE: &str = "jwks.json";
/// How often a JWKS is fetched again, and the least time between fetches for an unknown key id.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);

/// Most bytes of a JWKS read from a URL: a key set is a few KiB; an endpoint that sends more is
/// refused rather than buffered.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// Where the trusted keys come from.
#[derive(Clone, Debug)]
pub enum JwksSource {
    File(PathBuf),
    /// An https URL (http only on a loopback host), fetched with one client that follows no
    /// redirects.
    Url {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

impl JwksSource {
    /// `http(s)://…` is a URL, anything else a path. A URL must be https, or http to a loopback
    /// host (a key set fetched in clear over a network could be swapped on the way).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        if !(spec.starts_with("http://") || spec.starts_with("https://")) {
            return Ok(JwksSource::File(PathBuf::from(spec)));
        }
        let url = reqwest::Url::parse(spec).map_err(|e| {
            anyhow::anyhow!(
                "TOTP_JWKS is not a valid URL ({e}): {}",
                crate::config::redact_jwks(spec)
            )
        })?;
        let loopback = match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        anyhow::ensure!(
            url.scheme() == "https" || loopback,
            "TOTP_JWKS must be an https URL (http is allowed only for localhost): {}",
            crate::config::redact_jwks(spec)
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(JwksSource::Url { url, client })
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        let bytes = match self {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("reading the JWKS file {}", path.display()))?,
            JwksSource::Url { url, client } => {
                let shown = crate::config::redact_jwks(url.as_str());
                let mut response = client
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(reqwest::Error::without_url)
                    .with_context(|| format!("fetching the JWKS from {shown}"))?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "fetching the JWKS from {shown}: HTTP {} (redirects are not followed)",
                    response.status()
                );
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(reqwest::Error::without_url)
                    .with_context(|| format!("reading the JWKS from {shown}"))?
                {
                    anyhow::ensure!(
                        body.len() + chunk.len() <= JWKS_MAX_BYTES,
                        "the JWKS at {shown} is larger than {JWKS_MAX_BYTES} bytes"
                    );
                    body.extend_from_slice(&chunk);
                }
                body
            }
        };
        serde_json::from_slice(&bytes).context("the JWKS is not a JSON Web Key Set")
    }
}

/// What a token must satisfy besides its signature.
#[derive(Clone, Debug)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: Option<String>,
    pub roles_claim: String,
}

/// A verification key and the algorithm it is used with.
struct TrustedKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct KeyCache {
    keys: Vec<TrustedKey>,
    fetched_at: Instant,
}

/// Tokens already verified, so a client that sends the same token again costs a lookup instead
/// of a signature check. An entry lives until the token's `exp` (plus the leeway); the whole
/// cache is dropped when the keys change, and when it grows past [`VERIFIED_CACHE_LIMIT`].
#[derive(Default)]
struct VerifiedTokens {
    by_token: HashMap<String, (Caller, u64)>,
}

const VERIFIED_CACHE_LIMIT: usize = 10_000;
const LEEWAY_SECONDS: u64 = 60;

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    source: JwksSource,
    rules: Arc<TokenRules>,
    cache: Arc<RwLock<KeyCache>>,
    refetching: Arc<tokio::sync::Mutex<()>>,
    verified: Arc<RwLock<VerifiedTokens>>,
    /// Whether the last refresh failed (so that a spell of failures is logged once).
    refresh_failing: Arc<AtomicBool>,
}

impl Authenticator {
    /// Loads the JWKS once; fails when it cannot be read or holds no usable key.
    pub async fn new(source: JwksSource, rules: TokenRules) -> anyhow::Result<Self> {
        let keys = trusted_keys(&source.fetch().await?)?;
        Ok(Authenticator {
            source,
            rules: Arc::new(rules),
            cache: Arc::new(RwLock::new(KeyCache {
                keys,
                fetched_at: Instant::now(),
            })),
            refetching: Arc::new(tokio::sync::Mutex::new(())),
            verified: Arc::new(RwLock::new(VerifiedTokens::default())),
            refresh_failing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Caller, Error> {
        let header = header.ok_or(Error::Unauthenticated(AuthFailure::Missing))?;
        let token = bearer_token(header).ok_or(Error::Unauthenticated(AuthFailure::NotBearer))?;
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidToken);
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(caller) = self.already_verified(token, now) {
            return Ok(caller);
        }
        let token_header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        self.refresh_if_needed(token_header.kid.as_deref()).await;
        let claims = self.verify(token, &token_header).ok_or_else(invalid)?;
        let caller = caller_from_claims(&claims, &self.rules.roles_claim).ok_or_else(invalid)?;
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            let exp = exp as u64;
            let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
            if verified.by_token.len() >= VERIFIED_CACHE_LIMIT {
                verified.by_token.clear();
            }
            verified
                .by_token
                .insert(token.to_owned(), (caller.clone(), exp + LEEWAY_SECONDS));
        }
        Ok(caller)
    }

    /// The caller of a token verified before and not yet expired.
    fn already_verified(&self, token: &str, now: u64) -> Option<Caller> {
        let verified = self.verified.read().unwrap_or_else(|p| p.into_inner());
        verified
            .by_token
            .get(token)
            .filter(|(_, valid_until)| now <= *valid_until)
            .map(|(caller, _)| caller.clone())
    }

    fn verify(&self, token: &str, header: &Header) -> Option<Map<String, Value>> {
        let cache = self
            .cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let candidates = cache
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg && (header.kid.is_none() || k.kid == header.kid));
        for candidate in candidates {
            let mut validation = Validation::new(candidate.algorithm);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            validation.set_issuer(&[&self.rules.issuer]);
            validation.set_required_spec_claims(&["exp", "iss", "sub"]);
            // The audience and the times are checked below, on the claims as sent: the library
            // lets a token without `aud` pass an audience check.
            validation.validate_aud = false;
            if let Ok(data) =
                jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, &validation)
            {
                let now = jsonwebtoken::get_current_timestamp();
                let fits = has_audience(&data.claims, self.rules.audience.as_deref())
                    && times_are_sane(&data.claims, now);
                return fits.then_some(data.claims);
            }
        }
        None
    }

    /// Fetches the keys again when they are old, or when a token names a key we do not know
    /// (a rotation), at most once per [`JWKS_MIN_REFETCH`]. A failed fetch keeps the old keys.
    async fn refresh_if_needed(&self, kid: Option<&str>) {
        let (age, known) = {
            let cache = self
                .cache
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let known =
                kid.is_none_or(|kid| cache.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
            (cache.fetched_at.elapsed(), known)
        };
        let due = age >= JWKS_REFRESH || (!known && age >= JWKS_MIN_REFETCH);
        if !due {
            return;
        }
        let Ok(_only_one) = self.refetching.try_lock() else {
            return;
        };
        let fetched = self.source.fetch().await.and_then(|set| trusted_keys(&set));
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.fetched_at = Instant::now();
        match fetched {
            Ok(keys) => {
                if self.refresh_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("JWKS refresh works again; keys updated");
                }
                cache.keys = keys;
                // A key may have been withdrawn: tokens it signed must be checked again.
                self.verified
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_token
                    .clear();
            }
            // Logged once per spell of failures, not once per attempt.
            Err(err) if !self.refresh_failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %err, "JWKS refresh failed; keeping the previous keys until it works again")
            }
            Err(_) => {}
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The algorithm a JWK is used with: its `alg`, else what its key type implies.
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        // Shared-secret keys are refused: a JWKS is public.
        AlgorithmParameters::OctetKey(_) => None,
    }
}

fn trusted_keys(set: &JwkSet) -> anyhow::Result<Vec<TrustedKey>> {
    let keys: Vec<TrustedKey> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            Some(TrustedKey {
                kid: jwk.common.key_id.clone(),
                algorithm: algorithm_of(jwk)?,
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "the JWKS holds no usable signing key (RS*, PS*, ES256/384, EdDSA)"
    );
    Ok(keys)
}

/// Latest `exp` accepted: the last second of the year 9999 (RFC 3339's range). A later one is a
/// forged or broken token, and would overflow time arithmetic.
const MAX_EXPIRY: f64 = 253_402_300_799.0;

/// Whether `aud` names `audience` (as a string, or in a list of strings). Without a configured
/// audience any `aud` is fine; with one, a token without `aud` is refused: it may have been
/// minted for another application of the same issuer.
fn has_audience(claims: &Map<String, Value>, audience: Option<&str>) -> bool {
    let Some(audience) = audience else {
        return true;
    };
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        _ => false,
    }
}

/// Whether `exp` is a number not past [`MAX_EXPIRY`], and `iat`, when present, a number not
/// more than the leeway in the future (`exp` itself and `nbf` the library checks).
fn times_are_sane(claims: &Map<String, Value>, now: u64) -> bool {
    let exp_ok = claims
        .get("exp")
        .and_then(Value::as_f64)
        .is_some_and(|exp| exp.is_finite() && exp <= MAX_EXPIRY);
    let iat_ok = match claims.get("iat") {
        None => true,
        Some(iat) => iat
            .as_f64()
            .is_some_and(|iat| iat.is_finite() && iat <= (now + LEEWAY_SECONDS) as f64),
    };
    exp_ok && iat_ok
}

/// Reads `sub`, the resource owner and the roles claim into a caller; `None` without a `sub`.
fn caller_from_claims(claims: &Map<String, Value>, roles_claim: &str) -> Option<Caller> {
    // The subject is stored as the creator of events, and the resource owner may become a new
    // user's organisation: neither may hold a control character (see `check_no_control`).
    let plain = |s: &&str| !s.chars().any(char::is_control);
    let subject = claims
        .get("sub")?
        .as_str()
        .filter(|s| !s.is_empty())
        .filter(plain)?
        .to_owned();
    let resource_owner = match claims.get(RESOURCE_OWNER_CLAIM) {
        None | Some(Value::Null) => None,
        Some(owner) => Some(owner.as_str().filter(plain)?.to_owned()),
    };
    let mut grants: HashMap<String, HashSet<String>> = HashMap::new();
    if let Some(Value::Object(roles)) = claims.get(roles_claim) {
        for (permission, orgs) in roles {
            if let Value::Object(orgs) = orgs {
                grants
                    .entry(permission.clone())
                    .or_default()
                    .extend(orgs.keys().cloned());
            }
        }
    }
    Some(Caller {
        subject,
        resource_owner,
        grants,
    })
}

/// The service's own signing key, for the embedded default (no JWKS configured).
pub struct LocalSigningKey {
    signing_key: SigningKey,
    jwks_path: PathBuf,
}

impl LocalSigningKey {
    /// Loads `signing-key.pem` from `data_dir`, making it (and `jwks.json` beside it) on first use.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        crate::files::create_private_dir(data_dir)?;
        let key_path = data_dir.join(LOCAL_KEY_FILE);
        let signing_key = if key_path.exists() {
            let pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key: {e}", key_path.display())
            })?
        } else {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
            crate::files::write_private(&key_path, pem.as_bytes())?;
            tracing::info!(path = %key_path.display(), "made a local token signing key");
            key
        };
        let local = LocalSigningKey {
            signing_key,
            jwks_path: data_dir.join(LOCAL_JWKS_FILE),
        };
        std::fs::write(&local.jwks_path, local.jwks_json().to_string())
            .with_context(|| format!("writing {}", local.jwks_path.display()))?;
        Ok(local)
    }

    /// The JWKS that trusts exactly this key.
    pub fn jwks_json(&self) -> Value {
        let x = URL_SAFE_NO_PAD.encode(self.signing_key.verifying_key().as_bytes());
        serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x,
            "kid": LOCAL_KEY_ID, "alg": "EdDSA", "use": "sig"
        }]})
    }

    /// Where [`Self::jwks_json`] is written, for the authenticator to read.
    pub fn jwks_source(&self) -> JwksSource {
        JwksSource::File(self.jwks_path.clone())
    }

    /// Signs `claims` as an EdDSA JWT with `kid = local`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let der = self
            .signing_key
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
        let key = EncodingKey::from_ed_der(der.as_bytes());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(LOCAL_KEY_ID.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

/// The claims of a token for `subject` with `grants` (`permission@org` each).
pub fn token_claims(
    rules: &TokenRules,
    subject: &str,
    grants: &[(String, String)],
    resource_owner: Option<&str>,
    lifetime: Duration,
) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let mut roles: Map<String, Value> = Map::new();
    for (permission, org) in grants {
        let orgs = roles
            .entry(permission.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(orgs) = orgs {
            orgs.insert(org.clone(), Value::String(org.clone()));
        }
    }
    let mut claims = Map::new();
    claims.insert("iss".into(), rules.issuer.clone().into());
    claims.insert("sub".into(), subject.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + lifetime.as_secs()).into());
    if let Some(audience) = &rules.audience {
        claims.insert("aud".into(), Value::Array(vec![audience.clone().into()]));
    }
    if let Some(org) = resource_owner {
        claims.insert(RESOURCE_OWNER_CLAIM.into(), org.into());
    }
    claims.insert(rules.roles_claim.clone(), Value::Object(roles));
    Value::Object(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_bearer_headers() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("garbage"), None);
    }

    #[test]
    fn maps_zitadel_project_roles_to_grants() {
        let claims = serde_json::json!({
            "sub": "admin",
            RESOURCE_OWNER_CLAIM: "org1",
            "roles": {"user.write": {"org1": "org1.example", "org2": "x"}, "user.read": {"*": "all"}}
        });
        let caller = caller_from_claims(claims.as_object().unwrap(), "roles").unwrap();
        assert_eq!(caller.subject, "admin");
        assert_eq!(caller.resource_owner.as_deref(), Some("org1"));
        assert_eq!(
            caller.grants["user.write"],
            HashSet::from(["org1".to_owned(), "org2".to_owned()])
        );
        assert_eq!(caller.grants["user.read"], HashSet::from(["*".to_owned()]));
    }

    #[test]
    fn a_configured_audience_must_be_named_by_aud() {
        let claims = |aud: Value| {
            let mut claims = Map::new();
            if !aud.is_null() {
                claims.insert("aud".into(), aud);
            }
            claims
        };
        let ours = Some("ours");
        assert!(has_audience(&claims("ours".into()), ours));
        assert!(has_audience(
            &claims(serde_json::json!(["x", "ours"])),
            ours
        ));
        assert!(!has_audience(&claims(Value::Null), ours), "missing aud");
        assert!(!has_audience(&claims(serde_json::json!(null)), ours));
        let mut explicit_null = Map::new();
        explicit_null.insert("aud".into(), Value::Null);
        assert!(!has_audience(&explicit_null, ours), "aud: null");
        assert!(!has_audience(&claims(serde_json::json!(7)), ours), "number");
        assert!(!has_audience(&claims(serde_json::json!(["x"])), ours));
        assert!(!has_audience(&claims("other".into()), ours));
        assert!(has_audience(&claims(Value::Null), None));
    }

    #[test]
    fn far_expiries_and_future_issue_times_are_refused() {
        let now = 1_800_000_000;
        let claims = |exp: Value, iat: Option<Value>| {
            let mut claims = Map::new();
            claims.insert("exp".into(), exp);
            if let Some(iat) = iat {
                claims.insert("iat".into(), iat);
            }
            claims
        };
        assert!(times_are_sane(
            &claims((now + 600).into(), Some(now.into())),
            now
        ));
        assert!(times_are_sane(&claims((now + 600).into(), None), now));
        assert!(times_are_sane(
            &claims((now + 600).into(), Some((now + 60).into())),
            now
        ));
        assert!(!times_are_sane(
            &claims((now + 600).into(), Some((now + 61).into())),
            now
        ));
        assert!(!times_are_sane(&claims(i64::MAX.into(), None), now));
        assert!(!times_are_sane(&claims(u64::MAX.into(), None), now));
        assert!(!times_are_sane(&claims("soon".into(), None), now));
        assert!(!times_are_sane(
            &claims((now + 600).into(), Some("now".into())),
            now
        ));
    }

    /// A writer of log lines into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn failed_refreshes_keep_the_keys_and_are_logged_once_per_spell() {
        let local = LocalSigningKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let keys = local.jwks_json().to_string();
        let failing = Arc::new(AtomicBool::new(false));
        let fails = failing.clone();
        let router = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let (keys, fails) = (keys.clone(), fails.clone());
                async move {
                    if fails.load(Ordering::SeqCst) {
                        Err(http::StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Ok(keys)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let rules = TokenRules {
            issuer: "issuer".into(),
            audience: Some("ours".into()),
            roles_claim: "roles".into(),
        };
        let source = JwksSource::parse(&format!("http://{address}/keys")).unwrap();
        let auth = Authenticator::new(source, rules.clone()).await.unwrap();
        let claims = token_claims(&rules, "someone", &[], None, Duration::from_secs(60));
        let token = local.sign(&claims).unwrap();
        let header = format!("Bearer {token}");

        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        // Makes the next authentication refresh the keys.
        let refresh_due = |auth: &Authenticator| {
            auth.cache.write().unwrap().fetched_at = Instant::now() - JWKS_REFRESH;
            auth.verified.write().unwrap().by_token.clear();
        };
        failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            refresh_due(&auth);
            assert!(auth.authenticate(Some(&header)).await.is_ok(), "keys kept");
        }
        failing.store(false, Ordering::SeqCst);
        refresh_due(&auth);
        assert!(auth.authenticate(Some(&header)).await.is_ok());
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("JWKS refresh failed").count(), 1, "{text}");
        assert_eq!(
            text.matches("JWKS refresh works again").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn jwks_urls_must_be_https_except_on_loopback() {
        assert!(JwksSource::parse("https://idp.example/keys").is_ok());
        assert!(JwksSource::parse("http://127.0.0.1:9/keys").is_ok());
        assert!(JwksSource::parse("http://[::1]:9/keys").is_ok());
        assert!(JwksSource::parse("http://localhost/keys").is_ok());
        let refused = JwksSource::parse("http://idp.example/keys").unwrap_err();
        assert!(refused.to_string().contains("https"), "{refused}");
        assert!(JwksSource::parse("http://127.0.0.1.example/keys").is_err());
        assert!(matches!(
            JwksSource::parse("/etc/jwks.json").unwrap(),
            JwksSource::File(_)
        ));
    }

    #[test]
    fn a_token_without_a_plain_subject_or_owner_is_no_caller() {
        for claims in [
            serde_json::json!({"iss": "x"}),
            serde_json::json!({"sub": "a\u{0}b"}),
            serde_json::json!({"sub": "a\nb"}),
            serde_json::json!({"sub": "a", RESOURCE_OWNER_CLAIM: "org\u{0}"}),
            serde_json::json!({"sub": "a", RESOURCE_OWNER_CLAIM: 7}),
        ] {
            assert!(
                caller_from_claims(claims.as_object().unwrap(), "roles").is_none(),
                "{claims}"
            );
        }
    }
}
