//! What the clients of totp-service (the integration tests in `tests/api` and `tests/ha`, the
//! load generator in `tools/totp-bench`) need to read and write its wire, written once: a client
//! of every RPC on the four protocols ([`calls`]), gRPC-web framing ([`grpc_web`]), the
//! `zitadel.v1.ErrorDetail`s of a gRPC error ([`status`]), and users' whole lives over REST as a
//! mixed load ([`life`]).

pub mod calls;
pub mod grpc_web;
pub mod life;
pub mod status;
