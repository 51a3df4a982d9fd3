//! strait-core: the sans-IO heart of strait.
//!
//! It holds the wire codec ([`frame`]), the probe and health state machine
//! ([`health`]), and the routing plane ([`plane`]: connections, route
//! choice with every candidate's verdict, circuit breakers, the retry
//! budget, dedup), the attempt state machine that decides whether a
//! request may be replayed ([`attempt`]), export policy, target health and
//! redial backoff, and which gateways to dial ([`discovery`]): plain structs driven by `(event, now)` that return
//! decisions, in the style of quinn-proto.
//!
//! It must never depend on tokio or quinn, perform I/O, or read a clock:
//! `now` is always an argument. That is what keeps failover testable with
//! virtual time.

#![forbid(unsafe_code)]

pub mod attempt;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod discovery;
pub mod drill;
pub mod enroll;
pub mod frame;
pub mod handshake;
pub mod health;
pub mod limits;
pub mod logbudget;
pub mod plane;
pub mod policy;
pub mod renewal;
pub mod routing;
pub mod target;
pub mod trace;
pub mod window;

/// The ALPN protocol identifier of strait's tunnel protocol, version 1.
pub const ALPN: &[u8] = b"strait/1";
