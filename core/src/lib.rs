//! strait-core: the sans-IO heart of strait.
//!
//! It will hold the wire codec, the probe/health state machine, route
//! choice, the circuit breaker and the retry budget, as plain structs driven
//! by `(event, now)` that return decisions, in the style of quinn-proto.
//!
//! It must never depend on tokio or quinn, perform I/O, or read a clock:
//! `now` is always an argument. That is what keeps failover testable with
//! virtual time.

#![forbid(unsafe_code)]

/// The ALPN protocol identifier of strait's tunnel protocol, version 1.
pub const ALPN: &[u8] = b"strait/1";
