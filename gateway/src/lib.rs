//! strait-gateway: the data plane.
//!
//! It holds the configuration, identity loading, the connection drivers,
//! imports, exports, observers (metrics, logs, event log, mesh view) and the
//! admin endpoint, and drives `strait-core` with tokio's clock and real
//! sockets. It only moves bytes and feeds events: decisions (framing, health,
//! the routing plane with its breakers, dedup and replay rules) live in
//! `strait-core`, who a peer is, in `strait-ca`, and the CA service and its
//! client, in `strait-enroll`, which the renewal loop calls.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod carrier;
pub mod config;
pub mod connection;
pub mod current;
pub mod dialers;
pub mod directory;
pub mod drill;
mod error;
pub mod events;
pub mod export;
pub mod gate;
mod gateway;
pub mod handle;
pub mod import;
pub mod metrics;
pub mod note;
pub mod obs;
pub mod probe;
pub mod relay;
pub mod reload;
pub mod renew;
pub mod revocation;
pub mod scenario;
pub mod scrape;
pub mod splice;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod tunnel;
pub mod windows;
pub mod wire;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use gateway::{RunningGateway, start};
