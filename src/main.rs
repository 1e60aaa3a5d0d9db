//! The `totp-service` binary: parse the configuration, start logging, run the subcommand.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use totp_service::app;
use totp_service::config::{Cli, Command, Config, LogFormat, TokenArgs};
use totp_service::domain::clock::{Clock, SystemClock};
use totp_service::domain::totp;
use totp_service::transport::auth::{LocalSigningKey, token_claims};

/// mimalloc instead of the system allocator: a request allocates many small short-lived
/// buffers, and glibc's malloc and free took a large share of the service's CPU under load
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config).await,
        Command::Migrate => {
            app::open_store(&cli.config).await?;
            Ok(())
        }
        Command::Config => {
            println!("{:#?}", cli.config);
            println!(
                "effective database: {}",
                totp_service::config::redact_url(&cli.config.effective_database_url())
            );
            Ok(())
        }
        Command::Healthcheck => healthcheck(&cli.config).await,
        Command::Rekey => {
            let service = app::domain_service(&cli.config, Arc::new(SystemClock)).await?;
            let report = service.rekey().await?;
            println!(
                "re-sealed {} secrets, {} could not be opened",
                report.resealed, report.failed
            );
            anyhow::ensure!(
                report.failed == 0,
                "some secrets were not re-sealed (see the log)"
            );
            Ok(())
        }
        Command::Token(args) => print_token(&cli.config, &args),
        Command::Code { secret } => {
            let secret = totp::Secret::from_base32(&secret)
                .context("the secret must be base32 of at least 16 bytes")?;
            let step = totp::step_at(SystemClock.now().unix_seconds(), totp::PERIOD);
            println!(
                "{}",
                totp::code_for_step(&secret, step, totp::DIGITS, totp::Algorithm::Sha1)
            );
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let app = app::build(config, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving REST, gRPC and gRPC-web");
    app.serve(listener, app::shutdown_signal()).await?;
    Ok(())
}

async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let response = reqwest::Client::new()
        .get(format!("http://{address}/readyz"))
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
        .with_context(|| format!("no answer from {address}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "not ready: HTTP {}",
        response.status()
    );
    Ok(())
}

fn print_token(config: &Config, args: &TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.jwks.is_none(),
        "TOTP_JWKS is set, so the service trusts that JWKS and not the local key; get tokens from your identity provider"
    );
    let grants = args
        .grants
        .iter()
        .map(|grant| {
            grant
                .rsplit_once('@')
                .map(|(permission, org)| (permission.to_owned(), org.to_owned()))
                .with_context(|| format!("--grant `{grant}` must look like permission@org"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = LocalSigningKey::load_or_create(&config.data_dir)?;
    let claims = token_claims(
        &app::token_rules(config),
        &args.sub,
        &grants,
        args.org.as_deref(),
        args.ttl,
    );
    println!("{}", key.sign(&claims)?);
    Ok(())
}
