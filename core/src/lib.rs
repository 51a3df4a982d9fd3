//! strait-core: the sans-IO heart of strait.
//!
//! It holds the wire codec ([`frame`]) and, as they arrive, the probe and
//! health state machine, route choice, the circuit breaker and the retry
//! budget: plain structs driven by `(event, now)` that return decisions, in
//! the style of quinn-proto.
//!
//! It must never depend on tokio or quinn, perform I/O, or read a clock:
//! `now` is always an argument. That is what keeps failover testable with
//! virtual time.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod budget;
pub mod enroll;
pub mod frame;
pub mod health;
pub mod limits;
pub mod renewal;
pub mod routing;
pub mod trace;

/// The ALPN protocol identifier of strait's tunnel protocol, version 1.
pub const ALPN: &[u8] = b"strait/1";
