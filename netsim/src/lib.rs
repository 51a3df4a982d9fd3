//! strait-netsim: a userspace WAN on one machine.
//!
//! The kernel here has no `tc netem`, so strait brings its own: relays on
//! loopback that put latency, jitter, loss (random and bursty), duplication,
//! reordering, bandwidth limits and partitions between gateways. Tests,
//! benchmarks and the demo rehearse failover through it; operators run
//! partition drills with it.
//!
//! - [`link`]: the sans-IO link model, one direction of a path, seeded and
//!   driven by `now`.
//! - [`network`]: the links between every pair of regions, and the
//!   operations on them (partition, isolate, heal, set).
//! - [`udp`] and [`tcp`]: the relays that carry real packets through links.
//! - [`tun`]: an IP-level link between two network namespaces (TUN devices,
//!   root only), so kernel TCP and QUIC cross the same impairments.
//! - [`topology`]: the TOML file that describes regions, gateways and RTTs.
//! - [`sim`]: a whole simulated WAN started from a topology, and [`control`]
//!   its loopback control API.
//!
//! netsim only ever sends traffic to loopback addresses (topologies that name
//! any other address are refused) or between namespaces it was handed.

#![forbid(unsafe_code)]

pub mod batch;
pub mod control;
mod error;
pub mod link;
pub mod network;
mod schedule;
pub mod sim;
pub mod tcp;
pub mod topology;
pub mod tun;
pub mod udp;
pub mod units;

pub use error::NetsimError;
pub use link::{BurstLoss, DropCause, Fate, Link, LinkConfig, LinkStats};
pub use network::{LinkChange, LinkReport, Network, SharedLink};
pub use sim::{Netsim, RelayInfo};
pub use tcp::{PartitionMode, TcpRelay};
pub use topology::Topology;
pub use udp::UdpRelay;
