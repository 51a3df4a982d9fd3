//! strait-gateway: the data plane.
//!
//! It will hold configuration, identity loading, QUIC tunnels, imports,
//! exports and the admin endpoint, and drive `strait-core` with real time
//! and sockets. It only moves bytes and feeds events: every decision
//! (health, routing, circuit breaking) is made in `strait-core`, and who a
//! peer is, in `strait-ca`.

#![forbid(unsafe_code)]
