//! The README's walk-through over gRPC, with the generated tonic client: register a TOTP for a
//! user, compute the current code from the returned secret (as an authenticator app would), and
//! verify it.
//!
//! ```text
//! TOKEN=$(cargo run -q -- token --sub admin --grant user.credential.write@*) \
//!   cargo run -q --example grpc_walkthrough -- http://127.0.0.1:8080 alice
//! ```

use totp_service::domain::clock::{Clock, SystemClock};
use totp_service::domain::totp::{self, Algorithm, Secret};
use totp_service::proto::zitadel::user::v2::user_service_client::UserServiceClient;
use totp_service::proto::zitadel::user::v2::{RegisterTotpRequest, VerifyTotpRegistrationRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let user_id = args
        .next()
        .ok_or("usage: grpc_walkthrough <address> <user_id>")?;
    let token = std::env::var("TOKEN").map_err(|_| "set TOKEN (see `totp-service token`)")?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;

    let mut client = UserServiceClient::connect(address).await?;

    let mut request = tonic::Request::new(RegisterTotpRequest {
        user_id: user_id.clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let registered = client.register_totp(request).await?.into_inner();
    println!("uri: {}", registered.uri);

    let secret =
        Secret::from_base32(&registered.secret).ok_or("the service returned a bad secret")?;
    let step = totp::step_at(SystemClock.now().unix_seconds(), totp::PERIOD);
    let code = totp::code_for_step(&secret, step, totp::DIGITS, Algorithm::Sha1);

    let mut request = tonic::Request::new(VerifyTotpRegistrationRequest { user_id, code });
    request.metadata_mut().insert("authorization", bearer);
    match client.verify_totp_registration(request).await {
        Ok(response) => println!("verified: {:?}", response.into_inner().details),
        Err(status) => println!("refused: {:?} {}", status.code(), status.message()),
    }
    Ok(())
}
