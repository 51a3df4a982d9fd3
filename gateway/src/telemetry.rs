//! The mesh as this gateway saw it last. Every second each gateway sends
//! its peers a compact report of itself (tunnels, services, stream
//! counters) plus the reports it holds from others; `/status` shows every
//! gateway heard of, each with the age of its figures. A partition makes
//! figures stale and says so; it does not make them vanish until they are
//! [`FORGET_AFTER`] old. Counters are kept monotonic across reconnects and
//! restarts of the reporting gateway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use strait_core::frame::{GatewayReport, Message, RelayRoute, Telemetry, TunnelReport};
use tokio::time::Instant;

use crate::handle::PlaneHandle;

/// Figures older than this are marked stale.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Figures older than this are forgotten: the gateway left (or stayed cut
/// off that long) and is no longer listed or relayed.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How often reports are shared.
pub const SHARE_EVERY: Duration = Duration::from_secs(1);
/// Reports relayed per message, at most.
const MAX_RELAYED: usize = 64;

#[derive(Debug)]
struct Held {
    report: GatewayReport,
    /// When we received it, and how old it already was then.
    received: Instant,
    age_then: Duration,
    direct: bool,
    /// Counters of earlier boots of that gateway, so totals never drop.
    base_total: u64,
    base_failed: u64,
}

impl Held {
    fn age(&self, now: Instant) -> Duration {
        self.age_then + now.saturating_duration_since(self.received)
    }
}

/// Whether `new` is a later report of the same boot than `held`, by the
/// numbers both carry (0 from a gateway too old to number them).
fn newer_seq(held: &GatewayReport, new: &GatewayReport) -> bool {
    held.boot_id == new.boot_id && held.seq != 0 && new.seq > held.seq
}

/// One gateway as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MeshEntry {
    pub gateway: String,
    pub region: String,
    /// Which of the gateways sharing the name (one certificate per region).
    pub instance: String,
    /// Where it is dialed; empty when it did not say.
    pub advertise: String,
    pub age_ms: u64,
    pub stale: bool,
    /// Heard from it directly (else relayed by another gateway).
    pub direct: bool,
    pub streams_total: u64,
    pub streams_failed: u64,
    pub tunnels: Vec<TunnelReport>,
    pub services: Vec<strait_core::frame::ServiceAd>,
}

/// What this gateway knows of the mesh.
#[derive(Debug)]
pub struct MeshView {
    me: String,
    region: String,
    instance: String,
    advertise: String,
    boot_id: u64,
    /// The number of our last report in this boot.
    seq: AtomicU64,
    held: Mutex<HashMap<String, Held>>,
}

impl MeshView {
    pub fn new(me: &str, region: &str, instance: &str, advertise: &str) -> Self {
        MeshView {
            me: me.to_owned(),
            region: region.to_owned(),
            instance: instance.to_owned(),
            advertise: advertise.to_owned(),

            boot_id: rand::random(),
            seq: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is held, after forgetting gateways not heard of for
    /// [`FORGET_AFTER`].
    fn fresh(&self, now: Instant) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        let mut held = self.held();
        held.retain(|_, h| h.age(now) <= FORGET_AFTER);
        held
    }

    /// This gateway's own report, fresh: its active tunnels as the plane
    /// sees them, and, when it relays, what its working tunnels offer.
    pub fn own_report(
        &self,
        handle: &PlaneHandle,
        exports: &crate::export::Exports,
    ) -> GatewayReport {
        let services = exports.ads();
        let view = handle.view();
        let mut relayable: Vec<RelayRoute> = Vec::new();
        if exports.relays() {
            for c in view
                .conns
                .iter()
                .filter(|c| c.role == "active" && c.state != "down" && !c.draining)
            {
                for s in c.services.iter().filter(|s| s.healthy) {
                    let route = RelayRoute {
                        service: s.name.clone(),
                        region: c.peer.region.clone(),
                    };
                    if !relayable.contains(&route) {
                        relayable.push(route);
                    }
                }
            }
        }
        // One row per gateway: its lowest lane stands for the others.
        let mut active: Vec<_> = view.conns.iter().filter(|c| c.role == "active").collect();
        active.sort_by_key(|c| c.peer.lane);
        let mut seen = std::collections::HashSet::new();
        active.retain(|c| seen.insert(c.peer.key.clone()));
        active.sort_by_key(|c| c.conn);
        GatewayReport {
            gateway: self.me.clone(),
            region: self.region.clone(),
            boot_id: self.boot_id,
            age_ms: 0,
            tunnels: active
                .iter()
                .map(|c| TunnelReport {
                    peer: c.peer.name.clone(),
                    peer_region: c.peer.region.clone(),
                    state: c.state.to_owned(),
                    rtt_us: c.rtt_us.unwrap_or_default(),
                    loss_permille: (c.loss * 1000.0).round() as u16,
                })
                .collect(),
            services,
            streams_total: handle.counters.total.load(Ordering::Relaxed),
            streams_failed: handle.counters.failed.load(Ordering::Relaxed),
            instance: self.instance.clone(),
            advertise: self.advertise.clone(),
            relayable,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Takes in a peer's telemetry: its own report and what it relays.
    pub fn receive(&self, telemetry: Telemetry, now: Instant) {
        let mut held = self.held();
        let mut take = |report: GatewayReport, direct: bool| {
            if report.gateway == self.me && report.instance == self.instance {
                return;
            }
            let key = strait_core::plane::peer_key(&report.gateway, &report.instance);
            let age = Duration::from_millis(report.age_ms);
            if age > FORGET_AFTER {
                return;
            }
            // A later report is at most as old as the one it follows,
            // whatever ages the gateways that passed it on added up.
            let age = match held.get(&key) {
                Some(h) if newer_seq(&h.report, &report) => age.min(h.age(now)),
                _ => age,
            };
            let (base_total, base_failed) = match held.get(&key) {
                // The report we hold, or an older one of the same boot, come
                // back through other gateways: not news, however young its
                // age looks (the trip back is not counted in it).
                Some(h)
                    if h.report.boot_id == report.boot_id
                        && report.seq != 0
                        && report.seq <= h.report.seq =>
                {
                    return;
                }
                // Older news than what we hold: keep ours.
                Some(h) if h.age(now) < age && !newer_seq(&h.report, &report) => return,
                Some(h) if h.report.boot_id != report.boot_id => (
                    h.base_total + h.report.streams_total,
                    h.base_failed + h.report.streams_failed,
                ),
                Some(h) => (h.base_total, h.base_failed),
                None => (0, 0),
            };
            held.insert(
                key,
                Held {
                    report,
                    received: now,
                    age_then: age,
                    direct,
                    base_total,
                    base_failed,
                },
            );
        };
        take(telemetry.origin, true);
        for r in telemetry.relayed {
            take(r, false);
        }
    }

    /// What to send: our report and the freshest we hold of others.
    pub fn outgoing(&self, own: GatewayReport, now: Instant) -> Telemetry {
        let held = self.fresh(now);
        let mut relayed: Vec<GatewayReport> = held
            .values()
            .map(|h| {
                let mut r = h.report.clone();
                r.age_ms = h.age(now).as_millis() as u64;
                r
            })
            .collect();
        relayed.sort_by_key(|r| r.age_ms);
        relayed.truncate(MAX_RELAYED);
        Telemetry {
            origin: own,
            relayed,
        }
    }

    /// Every gateway heard of, ourselves first.
    pub fn snapshot(&self, own: GatewayReport, now: Instant) -> Vec<MeshEntry> {
        let mut out = vec![MeshEntry {
            gateway: own.gateway,
            region: own.region,
            instance: own.instance,
            advertise: own.advertise,
            age_ms: 0,
            stale: false,
            direct: true,
            streams_total: own.streams_total,
            streams_failed: own.streams_failed,
            tunnels: own.tunnels,
            services: own.services,
        }];
        let held = self.fresh(now);
        let mut others: Vec<&Held> = held.values().collect();
        others.sort_by(|a, b| {
            a.report
                .region
                .cmp(&b.report.region)
                .then(a.report.gateway.cmp(&b.report.gateway))
                .then(a.report.instance.cmp(&b.report.instance))
        });
        for h in others {
            let age = h.age(now);
            out.push(MeshEntry {
                gateway: h.report.gateway.clone(),
                region: h.report.region.clone(),
                instance: h.report.instance.clone(),
                advertise: h.report.advertise.clone(),
                age_ms: age.as_millis() as u64,
                stale: age > STALE_AFTER,
                direct: h.direct,
                streams_total: h.base_total + h.report.streams_total,
                streams_failed: h.base_failed + h.report.streams_failed,
                tunnels: h.report.tunnels.clone(),
                services: h.report.services.clone(),
            });
        }
        out
    }
}

/// Sends our telemetry on every tunnel each second.
pub async fn share(
    mesh: std::sync::Arc<MeshView>,
    handle: std::sync::Arc<PlaneHandle>,
    exports: std::sync::Arc<crate::export::Exports>,
) {
    loop {
        tokio::time::sleep(SHARE_EVERY).await;
        let own = mesh.own_report(&handle, &exports);
        let msg = Message::Telemetry(mesh.outgoing(own, Instant::now()));
        // Not on a tunnel that is Down: the control stream is reliable, so
        // reports would queue behind the outage and arrive late looking new.
        // Once per gateway, on its lowest lane that is not Down.
        let mut tunnels = handle.tunnels();
        tunnels.sort_by_key(|t| t.lane);
        let mut sent = std::collections::HashSet::new();
        for t in tunnels {
            if !handle.is_down(t.id) && sent.insert(t.key()) {
                t.send_control(&msg).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(gateway: &str, boot_id: u64, age_ms: u64, total: u64) -> GatewayReport {
        GatewayReport {
            gateway: gateway.into(),
            region: "r".into(),
            boot_id,
            age_ms,
            tunnels: vec![],
            services: vec![],
            streams_total: total,
            streams_failed: 0,
            instance: String::new(),
            advertise: String::new(),
            relayable: Vec::new(),
            seq: 0,
        }
    }

    #[test]
    fn a_report_coming_back_through_another_gateway_is_not_news() {
        let now = Instant::now();
        let view = MeshView::new("a", "eu", "", "");
        let numbered = |seq, age_ms| GatewayReport {
            seq,
            ..report("b", 1, age_ms, 10)
        };
        let from_c = |r| Telemetry {
            origin: report("c", 7, 0, 4),
            relayed: vec![r],
        };
        view.receive(from_c(numbered(5, 0)), now);
        // b is cut off; c sends back what it had of b from us, its age
        // short of the real one by the trips it made.
        let later = now + Duration::from_millis(1_000);
        view.receive(from_c(numbered(5, 850)), later);
        let age = |at| {
            view.snapshot(report("a", 9, 0, 0), at)
                .into_iter()
                .find(|e| e.gateway == "b")
                .unwrap()
                .age_ms
        };
        assert_eq!(age(later), 1_000, "an echo made b's figures look fresher");
        // A later report of b is taken, never older than the one before.
        view.receive(from_c(numbered(6, 1_500)), later);
        assert_eq!(age(later), 1_000);
        view.receive(from_c(numbered(7, 200)), later);
        assert_eq!(age(later), 200);
    }

    #[test]
    fn fresher_news_wins_and_relayed_news_is_kept() {
        let now = Instant::now();
        let view = MeshView::new("a", "eu", "", "");
        view.receive(
            Telemetry {
                origin: report("b", 1, 0, 10),
                relayed: vec![report("c", 7, 500, 3), report("a", 9, 0, 99)],
            },
            now,
        );
        // Older news about b (relayed by c) does not replace the direct one.
        view.receive(
            Telemetry {
                origin: report("c", 7, 0, 4),
                relayed: vec![report("b", 1, 2_000, 8)],
            },
            now,
        );
        let own = report("a", 9, 0, 1);
        let snap = view.snapshot(own, now);
        assert_eq!(
            snap.len(),
            3,
            "ourselves, b and c; never our own relayed report"
        );
        let b = snap.iter().find(|e| e.gateway == "b").unwrap();
        assert_eq!(b.streams_total, 10);
        assert!(b.direct);
        let c = snap.iter().find(|e| e.gateway == "c").unwrap();
        assert_eq!(c.streams_total, 4);
    }

    #[test]
    fn counters_never_go_backwards_when_a_gateway_restarts() {
        let now = Instant::now();
        let view = MeshView::new("a", "eu", "", "");
        view.receive(
            Telemetry {
                origin: report("b", 1, 0, 10),
                relayed: vec![],
            },
            now,
        );
        view.receive(
            Telemetry {
                origin: report("b", 2, 0, 3),
                relayed: vec![],
            },
            now,
        );
        let snap = view.snapshot(report("a", 9, 0, 0), now);
        assert_eq!(snap[1].streams_total, 13);
    }

    #[test]
    fn ages_grow_and_turn_stale() {
        let now = Instant::now();
        let view = MeshView::new("a", "eu", "", "");
        view.receive(
            Telemetry {
                origin: report("b", 1, 2_900, 1),
                relayed: vec![],
            },
            now,
        );
        let later = now + Duration::from_millis(150);
        let snap = view.snapshot(report("a", 9, 0, 0), later);
        assert!(snap[1].age_ms >= 3_050);
        assert!(snap[1].stale);
        // Gone for good after FORGET_AFTER: neither listed nor relayed.
        let gone = now + FORGET_AFTER;
        assert_eq!(view.snapshot(report("a", 9, 0, 0), gone).len(), 1);
        assert!(view.outgoing(report("a", 9, 0, 0), gone).relayed.is_empty());
    }
}
