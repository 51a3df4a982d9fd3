//! Who gets handshake work on the async side: the sans-IO
//! `strait_core::handshake::HandshakeGate` as `[tunnel]` configures it,
//! the guard that counts an admitted handshake in flight until it ends,
//! and the words a refusal is logged with. QUIC's accept loop and the TCP
//! carrier's listener each keep a gate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use strait_core::handshake::{Admit, GateConfig, HandshakeGate};

use crate::config::TunnelSettings;

/// A handshake gate as `[tunnel]` configures it.
pub fn handshake_gate(settings: &TunnelSettings) -> Arc<Mutex<HandshakeGate>> {
    Arc::new(Mutex::new(HandshakeGate::new(GateConfig {
        retry_above: settings.handshake_retry_above,
        max_in_flight: settings.max_handshakes,
        strikes: settings.handshake_strikes,
        ..GateConfig::default()
    })))
}

/// The stage and reason of a handshake the gate refused, for the
/// refusal's note; `what` names the handshakes counted.
pub fn refusal(
    admit: Admit,
    what: &str,
    settings: &TunnelSettings,
    from: SocketAddr,
) -> (&'static str, String) {
    if admit == Admit::RefuseBusy {
        let n = settings.max_handshakes;
        (
            "busy",
            format!("{n} {what} in flight ([tunnel] max_handshakes)"),
        )
    } else {
        let c = GateConfig::default();
        let reason = format!(
            "{} failed {what} from {} within {:?}: refused for {:?}",
            settings.handshake_strikes,
            from.ip(),
            c.strike_window,
            c.penalty
        );
        ("strikes", reason)
    }
}

/// One admitted handshake in flight, until it ends either way; `failed`
/// unless it became a connection (a task dropped mid-handshake counts as
/// failed).
pub struct InFlight {
    gate: Arc<Mutex<HandshakeGate>>,
    source: std::net::IpAddr,
    pub failed: bool,
}

impl InFlight {
    pub fn new(gate: Arc<Mutex<HandshakeGate>>, source: std::net::IpAddr) -> Self {
        InFlight {
            gate,
            source,
            failed: true,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_done(
                self.source,
                self.failed,
                tokio::time::Instant::now().into_std(),
            );
    }
}
