//! strait-enroll: enrollment, the CA service and its client.
//!
//! [`service`] is what `strait ca serve` runs: it signs CSRs for gateways
//! that present a join token or their current certificate, and hands out
//! the trust bundle and deny list. [`client`] is the other end: joining
//! with a token, renewing and fetching the bundle, each answer checked
//! before anything is written. Both speak `strait_core::enroll`'s messages
//! over QUIC; who a peer is gets decided by `strait-ca`.
//!
//! It never depends on the data plane (`strait-gateway`): the gateway calls
//! in to renew, never the other way round, and its client takes plain
//! identities and paths rather than the gateway's types.

#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod service;

pub use client::{Enrolled, fetch_bundle, join, renew};
pub use error::EnrollError;
pub use service::{CaServiceOptions, RunningCaService, serve, service_id};
