//! Probing, the async half of tunnel health: PING/PONG in QUIC datagrams
//! on every tunnel, fed into `strait_core::health::ProbeTracker`, whose
//! verdicts become the tunnel's health snapshot, metrics and events. The
//! decisions live in core; this module only moves datagrams and clocks.

use std::sync::Arc;
use std::time::Instant;

use strait_core::frame::Probe;
use strait_core::health::{HealthEvent, ProbeConfig, ProbeTracker, TunnelHealth};

use crate::tunnel::{HealthSnapshot, Tunnel};

/// Probes a tunnel with QUIC datagrams and keeps its health up to date,
/// answering the peer's probes too, until the connection closes.
pub async fn run(
    tunnel: Arc<Tunnel>,
    config: ProbeConfig,
    region: String,
    events: Arc<crate::events::EventLog>,
) {
    let mut last_seen = Instant::now();
    use crate::metrics as m;
    let mut tracker = ProbeTracker::new(config, Instant::now(), Some(tunnel.conn.rtt()));
    let labels = [
        ("region", region),
        ("peer", tunnel.peer.to_string()),
        ("peer_region", tunnel.region.clone()),
    ];
    let with = |k: &'static str, v: &'static str| {
        let mut l = labels.to_vec();
        l.push((k, v.to_owned()));
        l
    };
    let set_state = |state: TunnelHealth| {
        for s in [TunnelHealth::Up, TunnelHealth::Degraded, TunnelHealth::Down] {
            metrics::gauge!(m::TUNNEL_STATE, &with("state", s.as_str())).set(if s == state {
                1.0
            } else {
                0.0
            });
        }
    };
    set_state(TunnelHealth::Up);
    loop {
        let wake = tokio::time::Instant::from_std(tracker.poll_timeout());
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            datagram = tunnel.conn.read_datagram() => match datagram {
                Ok(bytes) => match Probe::decode(&bytes) {
                    Some(Probe::Ping(seq)) => {
                        let _ = tunnel.conn.send_datagram(Probe::Pong(seq).encode().to_vec().into());
                    }
                    Some(Probe::Pong(seq)) => {
                        last_seen = Instant::now();
                        if let Some(rtt) = tracker.handle_pong(seq, last_seen) {
                            metrics::histogram!(m::PROBE_RTT, &labels).record(rtt.as_secs_f64());
                            metrics::counter!(m::PROBES, &with("result", "answered")).increment(1);
                        }
                    }
                    None => {}
                },
                Err(_) => tracker.handle_closed(),
            }
        }
        let now = Instant::now();
        let missed = tracker.handle_timeout(now);
        if missed > 0 {
            metrics::counter!(m::PROBES, &with("result", "missed")).increment(u64::from(missed));
        }
        while let Some(seq) = tracker.poll_probe(now) {
            let _ = tunnel
                .conn
                .send_datagram(Probe::Ping(seq).encode().to_vec().into());
        }
        while let Some(HealthEvent::Changed { from, to }) = tracker.poll_event() {
            set_state(to);
            events.record(
                "tunnel_health",
                format!(
                    "{} ({}): {} -> {}",
                    tunnel.peer,
                    tunnel.region,
                    from.as_str(),
                    to.as_str()
                ),
            );
            let level_warn = to != TunnelHealth::Up;
            if level_warn {
                tracing::warn!(peer = %tunnel.peer, from = from.as_str(), to = to.as_str(), loss = tracker.loss(), "tunnel health changed");
            } else {
                tracing::info!(peer = %tunnel.peer, from = from.as_str(), to = to.as_str(), "tunnel health changed");
            }
        }
        let previous = tunnel.health();
        let up_since =
            if previous.state == TunnelHealth::Down && tracker.state() != TunnelHealth::Down {
                now
            } else {
                previous.up_since
            };
        metrics::gauge!(m::PROBE_LOSS, &labels).set(tracker.loss());
        tunnel.set_health(HealthSnapshot {
            state: tracker.state(),
            rtt: tracker.rtt(),
            loss: tracker.loss(),
            missed: tracker.consecutive_missed(),
            up_since,
            last_seen,
        });
        if tunnel.conn.close_reason().is_some() {
            return;
        }
    }
}
