//! Builds the running service from a configuration (store, keys, authenticator, router) and serves
//! it on a listener until a shutdown signal. Tests call the same functions with port 0.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

use crate::config::{Config, redact_url};
use crate::crypto::KeyRing;
use crate::domain::clock::Clock;
use crate::domain::{Service, Settings};
use crate::store::{self, StoreOptions};
use crate::transport::auth::{Authenticator, JwksSource, LocalSigningKey, TokenRules};
use crate::transport::{self, Api, ApiParts};

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
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
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
        Some(spec) => JwksSource::parse(spec),
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

/// Opens (and migrates) the database of a configuration.
pub async fn open_store(config: &Config) -> anyhow::Result<store::SqlStore> {
    let url = config.effective_database_url();
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
    }
    let options = StoreOptions {
        url: url.clone(),
        max_connections: config.effective_db_max_connections(),
        acquire_timeout: Duration::from_secs(5),
        // Twice the request timeout: a stuck write is abandoned by its request first, and then
        // gives the writer back.
        write_timeout: config.request_timeout * 2,
        cache_capacity: config.user_cache_size,
    };
    // A database that starts beside the service may not answer yet: wait for it, saying so.
    let started = Instant::now();
    let connected = loop {
        match store::connect(&options).await {
            Ok(connected) => break connected,
            Err(err) if started.elapsed() < config.db_wait => {
                tracing::warn!(database = %redact_url(&url), error = %err, "database not reachable yet; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => {
                return Err(err.context(format!("connecting to the database {}", redact_url(&url))));
            }
        }
    };
    connected
        .migrate()
        .await
        .context("applying the migrations")?;
    tracing::info!(database = %redact_url(&url), "database ready");
    Ok(connected)
}

/// The domain service of a configuration: store (migrated), keys and rules.
pub async fn domain_service(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
    let store = open_store(config).await?;
    let settings = Settings {
        otp_issuer: config.otp_issuer.clone(),
        max_attempts: config.max_attempts,
        lockout_duration: (!config.lockout_duration.is_zero()).then_some(config.lockout_duration),
        request_timeout: config.request_timeout,
    };
    Ok(Service::new(
        Arc::new(store),
        clock,
        key_ring(config)?,
        settings,
    ))
}

/// A built service, ready to serve.
pub struct App {
    router: Router,
    service: Service,
    draining: Arc<AtomicBool>,
    drain_delay: Duration,
    grace: Duration,
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
    Ok(App {
        router: transport::router(api, &config.cors_origins).await?,
        service,
        draining,
        drain_delay: config.drain_delay,
        grace: config.shutdown_grace,
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
        let signalled = Arc::new(tokio::sync::Notify::new());
        let notify = signalled.clone();
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
            notify.notify_one();
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
        };
        // Without TCP_NODELAY, an HTTP/2 answer written as several small frames waits for the
        // peer's delayed ACK (up to 40 ms) behind Nagle's algorithm; axum leaves it off.
        let listener = listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY on a connection");
            }
        });
        let server = axum::serve(listener, self.router).with_graceful_shutdown(stop);
        let grace = self.grace;
        let result = tokio::select! {
            served = server => served,
            _ = async { signalled.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; closing the remaining connections");
                Ok(())
            }
        };
        self.service.close().await;
        tracing::info!("stopped");
        result
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
