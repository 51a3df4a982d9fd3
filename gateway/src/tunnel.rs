//! A tunnel: one authenticated QUIC connection to a peer gateway, with the
//! name the routing plane gave it and our side of its control stream. What
//! the tunnel is worth for routing (health, services, draining, dedup) is
//! the plane's business, not the tunnel's.

use std::net::SocketAddr;

use strait_ca::SpiffeId;
use strait_core::frame::Message;
use strait_core::plane::ConnId;

/// A live connection to one peer gateway.
#[derive(Debug)]
pub struct Tunnel {
    pub id: ConnId,
    pub peer: SpiffeId,
    pub name: String,
    pub region: String,
    /// Which gateway of those sharing the certificate (empty: not said).
    pub instance: String,
    /// Where the peer says it is dialed (empty: not said).
    pub advertise: String,
    /// Which of the connections to this peer this is (0 the first).
    pub lane: u16,
    pub conn: quinn::Connection,
    /// Whether this gateway dialed the connection.
    pub dialed: bool,
    /// The protocol version agreed in HELLO.
    pub version: u16,
    /// The capabilities both gateways offered in HELLO.
    pub capabilities: Vec<String>,
    /// Our side of the control stream, for UPDATE, TELEMETRY and GOAWAY.
    control: tokio::sync::Mutex<Option<quinn::SendStream>>,
}

impl Tunnel {
    pub fn new(
        id: ConnId,
        peer: SpiffeId,
        name: String,
        region: String,
        conn: quinn::Connection,
        dialed: bool,
        agreed: strait_core::frame::Negotiated,
    ) -> Self {
        Tunnel {
            id,
            peer,
            name,
            region,
            instance: String::new(),
            advertise: String::new(),
            lane: 0,
            conn,
            dialed,
            version: agreed.version,
            capabilities: agreed.capabilities,
            control: tokio::sync::Mutex::new(None),
        }
    }

    /// Which gateway of those sharing the certificate this is, and where
    /// it says it is dialed.
    pub fn with_instance(mut self, instance: String, advertise: String) -> Self {
        self.instance = instance;
        self.advertise = advertise;
        self
    }

    /// This connection's lane.
    pub fn with_lane(mut self, lane: u16) -> Self {
        self.lane = lane;
        self
    }

    /// The plane's name for the peer (SPIFFE ID and instance): what a
    /// client's `tried` list holds.
    pub fn key(&self) -> String {
        strait_core::plane::peer_key(&self.peer.to_string(), &self.instance)
    }

    /// Sends a frame on the control stream (UPDATE, GOAWAY); a failure
    /// means the tunnel is going away and is only logged.
    pub async fn send_control(&self, msg: &Message) {
        let mut guard = self.control.lock().await;
        if let Some(send) = guard.as_mut()
            && let Err(e) = crate::wire::write_frame(send, msg).await
        {
            tracing::debug!(peer = %self.peer, "control frame not sent: {e}");
        }
    }

    pub async fn set_control(&self, send: quinn::SendStream) {
        *self.control.lock().await = Some(send);
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}
