//! The rules of the service, free of HTTP, gRPC and SQL: who may do what, the TOTP math, replay
//! and lockout decisions, and the events each command appends. Storage is reached only through
//! the [`store::Store`] port, time only through a [`clock::Clock`].

pub mod authz;
pub mod clock;
pub mod error;
#[cfg(test)]
pub mod memory;
pub mod outage;
pub mod recovery;
pub mod rules;
pub mod service;
pub mod store;
pub mod totp;
pub mod types;

pub use error::{Code, Error, Rejection};
pub use service::{Service, Settings};
