//! Who gets handshake work, sans-IO. Anyone who can reach a gateway's UDP
//! port can start a QUIC handshake, and each one costs the gateway a key
//! exchange and a certificate check before it knows the peer is a
//! stranger. While few handshakes are in flight every one is taken at
//! once; above `retry_above` a new one must first prove it owns its source
//! address with a QUIC Retry (one extra round trip, nothing computed for a
//! spoofed source); above `max_in_flight` new ones are refused outright
//! until the backlog drains. Peers that already hold tunnels are not
//! affected: their connections are established.

/// When handshakes must validate their address, and when they are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// Handshakes in flight above which a new one from an address not yet
    /// validated gets a Retry. 0: always.
    pub retry_above: usize,
    /// Handshakes in flight at which new ones are refused.
    pub max_in_flight: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            retry_above: 16,
            max_in_flight: 256,
        }
    }
}

/// What to do with a new handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Do the handshake.
    Accept,
    /// Ask the client to prove its address first (QUIC Retry).
    Retry,
    /// Refuse it: too many handshakes in flight.
    Refuse,
}

impl Admit {
    pub fn as_str(self) -> &'static str {
        match self {
            Admit::Accept => "accept",
            Admit::Retry => "retry",
            Admit::Refuse => "refuse",
        }
    }
}

/// Counts handshakes in flight and decides on each new one.
#[derive(Debug, Default)]
pub struct HandshakeGate {
    config: GateConfig,
    in_flight: usize,
}

impl HandshakeGate {
    pub fn new(config: GateConfig) -> Self {
        HandshakeGate {
            config,
            in_flight: 0,
        }
    }

    /// A new handshake arrived; `validated` when its address was proven
    /// (it answered a Retry), `may_retry` when a Retry can still be sent.
    /// An accepted handshake counts as in flight until
    /// [`HandshakeGate::handle_done`].
    pub fn handle_incoming(&mut self, validated: bool, may_retry: bool) -> Admit {
        if self.in_flight >= self.config.max_in_flight {
            return Admit::Refuse;
        }
        if !validated && may_retry && self.in_flight >= self.config.retry_above {
            return Admit::Retry;
        }
        self.in_flight += 1;
        Admit::Accept
    }

    /// An accepted handshake finished, either way.
    pub fn handle_done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_handshakes_go_straight_through() {
        let mut gate = HandshakeGate::new(GateConfig {
            retry_above: 2,
            max_in_flight: 4,
        });
        assert_eq!(gate.handle_incoming(false, true), Admit::Accept);
        assert_eq!(gate.handle_incoming(false, true), Admit::Accept);
        assert_eq!(gate.in_flight(), 2);
    }

    #[test]
    fn a_backlog_makes_strangers_prove_their_address_then_refuses() {
        let mut gate = HandshakeGate::new(GateConfig {
            retry_above: 2,
            max_in_flight: 4,
        });
        gate.handle_incoming(false, true);
        gate.handle_incoming(false, true);
        assert_eq!(gate.handle_incoming(false, true), Admit::Retry);
        // A client that answered the Retry is taken.
        assert_eq!(gate.handle_incoming(true, false), Admit::Accept);
        // One that cannot be sent another Retry is taken too: refusing it
        // would only make it start over.
        assert_eq!(gate.handle_incoming(false, false), Admit::Accept);
        assert_eq!(gate.in_flight(), 4);
        assert_eq!(gate.handle_incoming(true, false), Admit::Refuse);
        gate.handle_done();
        gate.handle_done();
        gate.handle_done();
        assert_eq!(gate.handle_incoming(false, true), Admit::Accept);
    }

    #[test]
    fn retry_above_zero_always_validates() {
        let mut gate = HandshakeGate::new(GateConfig {
            retry_above: 0,
            max_in_flight: 4,
        });
        assert_eq!(gate.handle_incoming(false, true), Admit::Retry);
        assert_eq!(gate.handle_incoming(true, false), Admit::Accept);
    }
}
