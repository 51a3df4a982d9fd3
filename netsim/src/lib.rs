//! strait-netsim: a userspace WAN on one machine.
//!
//! It will hold UDP and TCP relays that add latency, jitter, loss,
//! reordering, bandwidth limits and partitions between gateways on
//! loopback, driven by a topology file and a control API, for tests,
//! benchmarks and failover drills. It sends traffic only to the addresses
//! its topology names.

#![forbid(unsafe_code)]
