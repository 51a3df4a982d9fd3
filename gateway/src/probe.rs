//! Probing, the async half of tunnel health: PING/PONG in QUIC datagrams
//! on every tunnel, fed into `strait_core::health::ProbeTracker`, whose
//! verdicts go to the routing plane. The decisions live in core; this
//! module only moves datagrams and clocks. The probe and RTT metrics are
//! recorded here because nothing else sees each probe.

use std::sync::Arc;

use strait_core::frame::Probe;
use strait_core::health::{ProbeConfig, ProbeTracker};
use strait_core::plane::Health;
use tokio::time::Instant;

use crate::handle::PlaneHandle;
use crate::tunnel::Tunnel;

/// How late a probe's timer may fire before it is worth a warning.
const LATE_WARNING: std::time::Duration = std::time::Duration::from_secs(1);

/// Probes a tunnel with QUIC datagrams and keeps the plane's view of its
/// health up to date, answering the peer's probes too, until the
/// connection closes.
pub async fn run(tunnel: Arc<Tunnel>, handle: Arc<PlaneHandle>, config: ProbeConfig) {
    use crate::metrics as m;
    let mut tracker = ProbeTracker::new(config, Instant::now().into_std(), Some(tunnel.conn.rtt()));
    let labels = [
        ("region", handle.region().to_owned()),
        ("peer", tunnel.peer.to_string()),
        ("peer_region", tunnel.region.clone()),
    ];
    let with = |k: &'static str, v: &'static str| {
        let mut l = labels.to_vec();
        l.push((k, v.to_owned()));
        l
    };
    // Anything arriving on the connection counts as a sign of life: on a
    // lossy path probes go missing while streams still move.
    let mut rx_seen = tunnel.conn.stats().udp_rx.datagrams;
    let mut last_rx = Instant::now();
    let mut reported: Option<Health> = None;
    loop {
        let wake = Instant::from_std(tracker.poll_timeout());
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                // A probe that goes out seconds late says the gateway was
                // not run (CPU throttled or starved, or a thread blocked),
                // which probes on both sides then take for the path.
                let late = wake.elapsed();
                if late >= LATE_WARNING {
                    tracing::warn!(peer = %tunnel.peer, conn = %tunnel.id, late_ms = late.as_millis() as u64,
                        "tunnel probing ran late: the gateway's runtime did not run it (CPU throttled or starved?)");
                }
            }
            datagram = tunnel.conn.read_datagram() => match datagram {
                Ok(bytes) => match Probe::decode(&bytes) {
                    Some(Probe::Ping(seq)) => {
                        let _ = tunnel.conn.send_datagram(Probe::Pong(seq).encode().to_vec().into());
                    }
                    Some(Probe::Pong(seq)) => {
                        if let Some(rtt) = tracker.handle_pong(seq, Instant::now().into_std()) {
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
        let rx = tunnel.conn.stats().udp_rx.datagrams;
        if rx != rx_seen {
            rx_seen = rx;
            last_rx = now;
        }
        let missed = tracker.handle_timeout(now.into_std());
        if missed > 0 {
            metrics::counter!(m::PROBES, &with("result", "missed")).increment(u64::from(missed));
        }
        while let Some(seq) = tracker.poll_probe(now.into_std()) {
            let _ = tunnel
                .conn
                .send_datagram(Probe::Ping(seq).encode().to_vec().into());
        }
        while tracker.poll_event().is_some() {}
        metrics::gauge!(m::PROBE_LOSS, &labels).set(tracker.loss());
        let health = Health {
            state: tracker.state(),
            rtt: tracker.rtt(),
            loss: tracker.loss(),
            missed: tracker.consecutive_missed(),
            quiet: now.saturating_duration_since(last_rx),
        };
        // The plane needs every change of verdict, and the silence of a
        // Down tunnel as it grows.
        let worth_telling = reported.is_none_or(|r| {
            r.state != health.state
                || r.missed != health.missed
                || r.rtt != health.rtt
                || (health.state == strait_core::health::TunnelHealth::Down)
        });
        if worth_telling {
            handle.health(tunnel.id, health);
            reported = Some(health);
        }
        if tunnel.is_closed() {
            return;
        }
    }
}
