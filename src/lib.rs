//! totp-service: TOTP second factors as a service, speaking ZITADEL's user service v2 API.
//!
//! Map of the crate (a request flows top to bottom):
//! - [`config`]: the typed configuration (flags and environment).
//! - [`app`]: builds the service from a configuration and serves it on one listener.
//! - [`transport`]: REST, gRPC and gRPC-web on one port; authentication; error mapping.
//! - [`domain`]: the rules: access, TOTP math, replay and lockout, events.
//! - [`store`]: Postgres and SQLite behind the domain's storage port.
//! - [`crypto`]: sealing bytes at rest (the TOTP secrets).
//! - [`telemetry`]: the catalogue of metric families every module describes its own in.
//! - [`proto`]: the generated protobuf types.

pub mod app;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod files;
pub mod proto;
pub mod store;
pub mod telemetry;
pub mod transport;
