//! Builds the running service from a configuration (store, keys, authenticator, router) and serves
//! it on a listener until a shutdown signal. Tests call the same functions with port 0.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{Config, redact_url};
use crate::crypto::KeyRing;
use crate::domain::clock::Clock;
use crate::domain::store::Store;
use crate::domain::{Service, Settings};
use crate::store::{self, StoreOptions};
use crate::transport::auth::{Authenticator, JwksSource, LocalSigningKey, TokenRules};
use crate::transport::{self, Api, ApiParts, MAX_BODY_BYTES};

const LOCAL_ENCRYPTION_KEY_FILE: &str = "encryption-keys";

/// The token rules of a configuration.
pub fn token_rules(config: &Config) -> TokenRules {
    TokenRules {
        issuer: config.token_issuer.clone(),
        audience: config.token_audience.clone(),
        roles_claim: config.roles_claim.clone(),
    }
}

/// The configured key ring, or the one in the data folder (made on first use).
pub fn key_ring(config: &Config) -> anyhow::Result<KeyRing> {
    if let Some(spec) = &config.encryption_keys {
        return KeyRing::parse(spec).context("TOTP_ENCRYPTION_KEYS");
    }
    let path = config.data_dir.join(LOCAL_ENCRYPTION_KEY_FILE);
    if !path.exists() {
        crate::files::create_private_dir(&config.data_dir)?;
        let entry = KeyRing::generate_entry("local-1", &mut rand::rngs::OsRng);
        crate::files::write_private(&path, entry.as_bytes())?;
        tracing::info!(path = %path.display(), "made a local encryption key for TOTP secrets");
    }
    if config.database_url.is_some() {
        tracing::warn!(
            path = %path.display(),
            "TOTP_ENCRYPTION_KEYS is not set: TOTP secrets are sealed with the key file in the data folder; \
             every instance on this database needs the same key"
        );
    }
    let spec =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    KeyRing::parse(&spec).with_context(|| format!("the key file {}", path.display()))
}

/// The authenticator: the configured JWKS, or the local signing key.
pub async fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let source = match &config.jwks {
        Some(spec) => {
            match (&config.token_audience, config.token_any_audience) {
                (Some(_), _) => {}
                (None, true) => tracing::warn!(
                    "TOTP_TOKEN_ANY_AUDIENCE is set: tokens of every application of the issuer are accepted"
                ),
                (None, false) => anyhow::bail!(
                    "TOTP_JWKS is set but TOTP_TOKEN_AUDIENCE is not: without an audience, a token \
                     the issuer minted for any other application would be accepted here. Set \
                     TOTP_TOKEN_AUDIENCE to this service's audience (e.g. its project or client id), \
                     or set TOTP_TOKEN_ANY_AUDIENCE=true to accept any audience knowingly"
                ),
            }
            JwksSource::parse(spec)?
        }
        None => {
            let local = LocalSigningKey::load_or_create(&config.data_dir)?;
            tracing::info!(
                data_dir = %config.data_dir.display(),
                "no TOTP_JWKS set: trusting only the local signing key (make tokens with `totp-service token`)"
            );
            local.jwks_source()
        }
    };
    Authenticator::new(source, token_rules(config)).await
}

/// Opens (and migrates) the database of a configuration, waiting up to `TOTP_DB_WAIT` for it to
/// answer.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.effective_database_url();
    if config.database_url.is_none() {
        crate::files::create_private_dir(&config.data_dir)?;
        crate::files::create_private_file(&config.sqlite_path())?;
    }
    let options = StoreOptions {
        url: url.clone(),
        max_connections: config.db_max_connections,
        acquire_timeout: Duration::from_secs(5),
        // Twice the request timeout: a stuck write is abandoned by its request first, and then
        // gives the writer back.
        write_timeout: config.request_timeout * 2,
        cache_capacity: config.user_cache_size,
        queue_capacity: config.db_queue_capacity,
    };
    // A database that starts beside the service may not answer yet: wait for it, saying so.
    let started = Instant::now();
    let store = loop {
        match store::open(&options).await {
            Ok(store) => break store,
            Err(err) if started.elapsed() < config.db_wait => {
                tracing::warn!(database = %redact_url(&url), error = %err, "database not reachable yet; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => {
                return Err(err.context(format!("opening the database {}", redact_url(&url))));
            }
        }
    };
    tracing::info!(database = %redact_url(&url), "database ready");
    Ok(store)
}

/// The domain service of a configuration: store (migrated), keys and rules.
pub async fn domain_service(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
    let store = open_store(config).await?;
    let settings = Settings {
        otp_issuer: config.otp_issuer.clone(),
        max_attempts: config.max_attempts,
        lockout_duration: (!config.lockout_duration.is_zero()).then_some(config.lockout_duration),
        request_timeout: config.request_timeout,
        max_recovery_codes: config.recovery_codes_max,
    };
    Ok(Service::new(store, clock, key_ring(config)?, settings))
}

/// A built service, ready to serve.
pub struct App {
    router: Router,
    service: Service,
    draining: Arc<AtomicBool>,
    drain_delay: Duration,
    grace: Duration,
    limits: ConnectionLimits,
}

/// What one client connection may cost the service.
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    /// Longest wait for a request's headers (and for the first byte of a new connection).
    header_read_timeout: Duration,
    /// Most connections served at once; beyond it clients wait in the kernel's backlog.
    max_connections: usize,
}

/// Builds the service of a configuration, with `clock` as the time source.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let service = domain_service(config, clock).await?;
    let draining = Arc::new(AtomicBool::new(false));
    let api = Api::new(ApiParts {
        service: service.clone(),
        auth: authenticator(config).await?,
        draining: draining.clone(),
    });
    let options = transport::RouterOptions {
        cors_origins: config.cors_origins.clone(),
        body_read_timeout: config.body_read_timeout,
    };
    Ok(App {
        router: transport::router(api, &options).await?,
        service,
        draining,
        drain_delay: config.drain_delay,
        grace: config.shutdown_grace,
        limits: ConnectionLimits {
            header_read_timeout: config.header_read_timeout,
            max_connections: config.max_connections.max(1),
        },
    })
}

impl App {
    /// Serves on `listener` (HTTP/1.1 and h2c) until `shutdown` resolves; then `/readyz` turns
    /// false while requests are still served for the drain delay, then no new connection is
    /// taken, in-flight requests get the grace period to finish, and the database pool is closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let draining = self.draining.clone();
        let drain_delay = self.drain_delay;
        let stop = async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
            if !drain_delay.is_zero() {
                tracing::info!(
                    ?drain_delay,
                    "shutting down: readiness off, still serving for the drain delay"
                );
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
        };
        let connections = GracefulShutdown::new();
        accept_until(listener, self.router, self.limits, &connections, stop).await;
        if tokio::time::timeout(self.grace, connections.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "grace period over; closing the remaining connections");
        }
        self.service.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Takes connections and serves each on a task of its own until `stop` resolves, at most
/// `limits.max_connections` at a time.
///
/// Served with hyper directly rather than `axum::serve`, which has no header read timeout and no
/// connection cap: a client that opens connections and sends nothing, or sends its headers a
/// byte at a time, would otherwise hold them open forever.
async fn accept_until(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    connections: &GracefulShutdown,
    stop: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's read buffer grows to ~400 KiB by default while a client streams a body: with
    // many such clients that is most of the service's memory. 64 KiB still holds any request's
    // headers (their limit too).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BODY_BYTES);
    // Pings find peers that vanished without closing; a live but idle HTTP/2 client is held to
    // the connection cap.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let service = hyper_util::service::TowerToHyperService::new(router);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            permit = permits.clone().acquire_owned() => {
                let Ok(permit) = permit else { break };
                tokio::select! {
                    () = &mut stop => break,
                    accepted = listener.accept() => accepted.map(|(stream, _)| (stream, permit)),
                }
            }
        };
        let (stream, permit) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without TCP_NODELAY, an HTTP/2 answer written as several small frames waits for the
        // peer's delayed ACK (up to 40 ms) behind Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY on a connection");
        }
        let builder = builder.clone();
        let service = service.clone();
        let watcher = connections.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            // The protocol is chosen from the first bytes, which hyper waits for without a limit:
            // a connection that sends nothing is closed after the header timeout.
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
