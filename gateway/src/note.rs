//! What the drivers report that the routing plane does not hold: peers
//! refused at the handshake, telemetry heard from peers, exported and
//! local targets lost and found. Sent on a channel to the observers, so no driver
//! records metrics of these or writes the event log itself.

use std::net::SocketAddr;

#[derive(Debug)]
pub enum Note {
    PeerRefused {
        addr: SocketAddr,
        /// "handshake" (TLS) or "hello".
        stage: &'static str,
        reason: String,
    },
    Telemetry(strait_core::frame::Telemetry),
    TargetHealth {
        service: String,
        target: String,
        healthy: bool,
    },
    /// The local target of an import (`[[import]] local`) failed or passed
    /// its health check.
    LocalTargetHealth {
        service: String,
        target: String,
        healthy: bool,
    },
}

pub type NoteSender = tokio::sync::mpsc::UnboundedSender<Note>;
