//! Observers: the one place that turns what the routing plane and the
//! drivers report (typed [`PlaneEvent`]s and [`Note`]s) into metrics, log
//! lines, the event log of `/status` and the mesh view. Drivers never
//! record these themselves, so a failover reads the same in all four.

use std::sync::Arc;

use strait_core::health::TunnelHealth;
use strait_core::logbudget::LogBudget;
use strait_core::plane::{DownReason, PlaneEvent};
use tokio::sync::mpsc;

use crate::events::EventLog;
use crate::metrics as m;
use crate::note::Note;
use crate::telemetry::MeshView;

/// Where observations go.
pub struct Observers {
    pub region: String,
    pub events: Arc<EventLog>,
    pub mesh: Arc<MeshView>,
    /// Refused handshakes are logged (and recorded as events) one by one
    /// only up to this budget; the rest are summed up (see
    /// [`Observers::refusal_budget`]).
    pub refusals: std::sync::Mutex<LogBudget>,
}

/// Refused handshakes logged one by one per [`REFUSAL_INTERVAL`]; anyone
/// who reaches the port can cause them.
pub const REFUSALS_LOGGED: u32 = 10;
pub const REFUSAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Observers {
    /// The budget for refused handshakes' log lines.
    pub fn refusal_budget() -> std::sync::Mutex<LogBudget> {
        std::sync::Mutex::new(LogBudget::new(REFUSALS_LOGGED, REFUSAL_INTERVAL))
    }

    /// Consumes both channels until their senders are gone.
    pub async fn run(
        self,
        mut plane: mpsc::UnboundedReceiver<PlaneEvent>,
        mut notes: mpsc::UnboundedReceiver<Note>,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(e) = plane.recv() => self.plane_event(e),
                Some(n) = notes.recv() => self.note(n),
                _ = tick.tick() => self.summarise_refusals(),
                else => return,
            }
        }
    }

    /// One line for the refusals the budget kept out of the log.
    fn summarise_refusals(&self) {
        let now = tokio::time::Instant::now().into_std();
        let summary = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poll_summary(now);
        if let Some(s) = summary {
            let secs = now.saturating_duration_since(s.since).as_secs();
            let detail = format!(
                "{} more handshakes refused in the last {secs} s, not logged one by one (strait_peers_refused_total counts them all)",
                s.count
            );
            self.events.record("peers_refused", detail.clone());
            tracing::warn!(refused = s.count, seconds = secs, "{detail}");
        }
    }

    pub fn plane_event(&self, event: PlaneEvent) {
        match event {
            PlaneEvent::TunnelUp { conn, peer, dialed } => {
                self.events
                    .record("tunnel_up", format!("{} ({})", peer.id, peer.region));
                tracing::info!(peer = %peer.id, instance = %peer.instance, %conn, dialed, "tunnel up");
            }
            PlaneEvent::TunnelDown { conn, peer, why } => match why {
                DownReason::Superseded => {
                    tracing::debug!(peer = %peer.id, %conn, "another tunnel to this peer is preferred; this one closes once idle");
                }
                DownReason::Closed | DownReason::Closing(_) => {
                    let why = match why {
                        DownReason::Closing(r) => r.as_str(),
                        _ => "closed",
                    };
                    self.events.record(
                        "tunnel_down",
                        format!("{} ({}): {why}", peer.id, peer.region),
                    );
                    tracing::info!(peer = %peer.id, %conn, reason = why, "tunnel down");
                }
            },
            PlaneEvent::HealthChanged {
                conn,
                peer,
                from,
                to,
                loss,
            } => {
                self.events.record(
                    "tunnel_health",
                    format!(
                        "{} ({}): {} -> {}",
                        peer.id,
                        peer.region,
                        from.as_str(),
                        to.as_str()
                    ),
                );
                if to == TunnelHealth::Up {
                    tracing::info!(peer = %peer.id, %conn, from = from.as_str(), to = to.as_str(), "tunnel health changed");
                } else {
                    tracing::warn!(peer = %peer.id, %conn, from = from.as_str(), to = to.as_str(), loss, "tunnel health changed");
                }
            }
            PlaneEvent::ServicesChanged {
                conn,
                peer,
                services,
            } => {
                tracing::info!(peer = %peer.id, %conn, services, "peer updated its services");
            }
            PlaneEvent::PeerDraining { conn, peer } => {
                self.events
                    .record("peer_draining", format!("{} ({})", peer.id, peer.region));
                tracing::info!(peer = %peer.id, %conn, "peer is draining: no new streams to it");
            }
            PlaneEvent::CircuitOpened { peer, service } => {
                self.circuit(&peer, &service, true);
                tracing::warn!(%service, %peer, "circuit opened: peer ejected for this service");
            }
            PlaneEvent::CircuitClosed { peer, service } => {
                self.circuit(&peer, &service, false);
                tracing::info!(%service, %peer, "circuit closed");
            }
            PlaneEvent::Failover { service, from, to } => {
                self.moved(m::FAILOVERS, "failover", &service, &from, &to)
            }
            PlaneEvent::Failback { service, from, to } => {
                self.moved(m::FAILBACKS, "failback", &service, &from, &to)
            }
        }
    }

    fn circuit(&self, peer: &str, service: &str, open: bool) {
        let labels = [
            ("region", self.region.clone()),
            ("service", service.to_owned()),
            ("peer", peer.to_owned()),
        ];
        metrics::gauge!(m::CIRCUIT_OPEN, &labels).set(if open { 1.0 } else { 0.0 });
        let kind = if open {
            "circuit_opened"
        } else {
            "circuit_closed"
        };
        self.events.record(kind, format!("{peer} for {service}"));
    }

    fn moved(&self, metric: &'static str, what: &'static str, service: &str, from: &str, to: &str) {
        let labels = [
            ("region", self.region.clone()),
            ("service", service.to_owned()),
            ("from", from.to_owned()),
            ("to", to.to_owned()),
        ];
        metrics::counter!(metric, &labels).increment(1);
        self.events
            .record(what, format!("{service}: {from} -> {to}"));
        tracing::warn!(%service, from, to, "{what}");
    }

    pub fn note(&self, note: Note) {
        match note {
            Note::PeerRefused {
                addr,
                stage,
                reason,
            } => {
                let labels = [
                    ("region", self.region.clone()),
                    ("reason", stage.to_owned()),
                ];
                metrics::counter!(m::PEERS_REFUSED, &labels).increment(1);
                // An interval that ended says what it held back first.
                self.summarise_refusals();
                let now = tokio::time::Instant::now().into_std();
                let log = self
                    .refusals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allow(now);
                if !log {
                    return;
                }
                let reason = strait_ca::tls::tidy_handshake_text(&reason);
                self.events
                    .record("peer_refused", format!("{addr}: {reason}"));
                tracing::warn!(peer_addr = %addr, stage, "peer refused: {reason}");
            }
            Note::Telemetry(t) => self.mesh.receive(t, tokio::time::Instant::now()),
            Note::TargetHealth {
                service,
                target,
                healthy,
            } => {
                if healthy {
                    self.events
                        .record("target_up", format!("{service} at {target}"));
                    tracing::info!(%service, %target, "target healthy again");
                } else {
                    self.events
                        .record("target_down", format!("{service} at {target}"));
                    tracing::warn!(%service, %target, "target unreachable; telling peers");
                }
            }
            Note::LocalTargetHealth {
                service,
                target,
                healthy,
            } => {
                if healthy {
                    self.events
                        .record("local_target_up", format!("{service} at {target}"));
                    tracing::info!(%service, %target, "local target healthy again; used after the hold-down");
                } else {
                    self.events
                        .record("local_target_down", format!("{service} at {target}"));
                    tracing::warn!(%service, %target, "local target unreachable; new streams go to remote regions");
                }
            }
        }
    }
}
