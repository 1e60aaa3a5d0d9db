//! What the clients of totp-service (the integration tests in `tests/api`, the load generator in
//! `tools/totp-bench`) need to read and write its wire, written once: gRPC-web framing
//! ([`grpc_web`]) and the `zitadel.v1.ErrorDetail`s of a gRPC error ([`status`]).

pub mod grpc_web;
pub mod status;
